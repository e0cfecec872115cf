#!/usr/bin/env bash
# Mutation testing of methods/ and optimizers/ against their tests. Not part of .ci/run.
#
#   bash scripts/mutation.sh            # full run from scratch, then results/quality/mutation.md
#   KEEP=1 bash scripts/mutation.sh     # reuse mutants/ (mutmut reruns only changed functions/tests)
#   bash scripts/mutation.sh 'methods.lora.*'   # only these mutants (mutmut name globs); partial report
#
# What is mutated and which tests run is configured in pyproject.toml [tool.mutmut]: methods/ against
# tests/methods/, tests/tasks/test_images.py, tests/engine/test_checkpoint.py, tests/models/test_decoder.py and tests/models/test_storage.py.
# Environment: JOBS (parallel mutant workers, default 2), MUTMUT_VERSION (pip spec, default ">=3.8,<4"),
# REPORT / SURVIVORS (output paths), KEEP=1 (do not delete mutants/ first).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${JOBS:-2}"
REPORT="${REPORT:-results/quality/mutation.md}"
SURVIVORS="${SURVIVORS:-results/quality/survivors.txt}"

if ! command -v mutmut >/dev/null 2>&1; then
    python -m pip install --quiet "mutmut${MUTMUT_VERSION:->=3.8,<4}"
fi

# One thread per worker: JOBS workers share the cores, and torch/OpenMP thread pools must not exist
# before mutmut forks its workers.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

# mutants/ is mutmut's working copy (git-ignored); without KEEP every run starts clean, so the report
# never mixes verdicts from older sources or tests.
if [[ "${KEEP:-0}" != 1 ]]; then
    rm -rf mutants
fi

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
t0=$(date +%s)
status=0
mutmut run --max-children "$JOBS" "$@" || status=$?
wall=$(( $(date +%s) - t0 ))
echo "mutmut run: exit $status after ${wall}s"

command="bash scripts/mutation.sh${*:+ $*}"
python scripts/mutation_report.py --output "$REPORT" --survivors "$SURVIVORS" \
    --command "$command" --started "$started" --wall-seconds "$wall"
exit "$status"
