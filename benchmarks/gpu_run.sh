#!/usr/bin/env bash
# On a machine with a CUDA GPU: run the CUDA benchmark cases and write benchmarks/results/<device>.json,
# the file to commit (python -m reports.build reads every JSON there).
#   benchmarks/gpu_run.sh                        # every CUDA case (torch.compile cases take the longest)
#   FILTER="not compile" benchmarks/gpu_run.sh   # narrow it with a pytest -k expression
# Extra arguments go to pytest as they are.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here: run this on a GPU machine')" \
    || exit 2
out="benchmarks/results/$(python -m benchmarks.harness slug cuda).json"
mkdir -p benchmarks/results
python -m pytest benchmarks/ --benchmark-only -k "cuda${FILTER:+ and ($FILTER)}" --benchmark-json "$out" "$@"
status=$?
echo "results: $out (pytest exit status $status)"
exit $status
