#!/usr/bin/env bash
# One prepared script for a lent GPU machine (../shared/device/README.md): every check issue 12 leaves to a GPU,
# each under its own timeout, each reporting and going on. Fits one 10-minute device command by default.
#   OUT=/tmp/gpu benchmarks/gpu_session.sh      # on the device machine $OUT is set; at most 8 files land there
# Steps (seconds, override with the variables); about 520 s in all:
#   CHECKS_S=120  python -m benchmarks.gpu_checks: CUDA graphs vs eager (50 iterations), K=5 packed vs solo
#   PACKED_S=100  the packed benchmark cases (K = 1, 3, 5, 15)        -> $OUT/cuda-<gpu>-packed.json
#   GRAPHS_S=130  CUDA-graph cases and the baselines they compare to  -> $OUT/cuda-<gpu>-graphs.json
#   STUDY_S=150   the standard step_ratio study on CUDA (packed seeds) for that long: trials done per minute
# Test its logic on the CPU with DEVICE=cpu (the benchmark step then skips its CUDA cases).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if ! python -c "import optuna, torch_fidelity, mlxtend" 2>/dev/null; then  # the offline machine: the wheels in .whl/
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
log="$OUT/session.log"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "machine"
{ nvidia-smi 2>&1 | head -15; python -c "import torch; print('torch', torch.__version__)"; } >> "$log"

step "gpu_checks"
timeout "${CHECKS_S:-120}" python -m benchmarks.gpu_checks --device "$DEVICE" > "$OUT/gpu_checks.json" 2>> "$log"
echo "exit $?" | tee -a "$log"

step "benchmarks: packed cases, then CUDA-graph cases (two JSON files: a timeout loses only its own)"
if [ "$DEVICE" = cuda ]; then
    slug=$(python -m benchmarks.harness slug cuda)
    timeout "${PACKED_S:-100}" python -m pytest benchmarks/ --benchmark-only -q -k "cuda and packed" \
        --benchmark-json "$OUT/$slug-packed.json" >> "$log" 2>&1
    echo "exit $?" | tee -a "$log"
    timeout "${GRAPHS_S:-130}" python -m pytest benchmarks/ --benchmark-only -q -k "cuda and not packed and \
(cudagraphs or dcgan-b64-example or dcgan-b64-project-fp32 or blog-3ch-b100-example or blog-3ch-b100-project-fp32)" \
        --benchmark-json "$OUT/$slug-graphs.json" >> "$log" 2>&1
    echo "exit $?" | tee -a "$log"
fi

step "standard step_ratio study, packed seeds, for ${STUDY_S:-150} s"
runs=/tmp/gpu-session-runs
rm -rf "$runs" && mkdir -p "$runs"
budget=$([ "$DEVICE" = cuda ] && echo standard || echo smoke)
timeout -s INT "${STUDY_S:-150}" python -m ablations.run --study step_ratio --budget "$budget" --device "$DEVICE" \
    --storage "sqlite:///$runs/s.db" --runs "$runs" --no-report --no-progress > "$OUT/study.log" 2>&1
echo "exit $? (124: stopped by the timeout, as planned)" | tee -a "$log"
python - "$runs" >> "$OUT/study.log" 2>&1 <<'EOF'
import json, pathlib, sys
for summary in sorted(pathlib.Path(sys.argv[1]).glob("*/*/seed*/summary.json")):
    s = json.loads(summary.read_text())
    print(summary.parent, s["status"], s["g_steps"], "G steps in", round(s["wall_s"], 1), "s")
EOF
tar czf "$OUT/runs.tgz" --exclude='*.pt' -C "$runs" . 2>> "$log"
step "done"
ls -la "$OUT" >> "$log"
