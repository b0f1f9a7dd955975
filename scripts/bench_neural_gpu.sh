#!/usr/bin/env bash
# Speed on one GPU in one command (issue 6), everything under $OUT:
#   1. the GPU tests of the engine and kernels (CUDA graph replay == eager; Triton == PyTorch)
#   2. the comparison table: eager vs CUDA graph (vs graph + fused kernels), bf16 vs fp32, sessions
#      1/16/64 on the shipped checkpoint and `base` shapes, then the anchor shapes (Matrix-Game 2.0,
#      Self-Forcing) eager vs graph  -> compare.json (rewritten after every row) + compare.txt
#   3. the Triton kernels against their PyTorch references              -> kernels.json + kernels.txt
#   4. the default engine (graph, bf16) at 1 and 64 sessions             -> engine-s*.json
# Expected ~4 minutes on an H100 (each stage has its own timeout; the sum of timeouts is < 10 min).
#
#   OUT=/some/dir scripts/bench_neural_gpu.sh
#   SECONDS_PER_ROW=1 scripts/bench_neural_gpu.sh        # shorter rows
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-runs/bench-neural}"
SECONDS_PER_ROW="${SECONDS_PER_ROW:-1.5}"
mkdir -p "$OUT"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
python -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])" | tee -a "$OUT/gpu.txt"

echo "== 1. GPU tests (engine, kernels, bench) =="
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_kernels.py \
    tests/test_bench_neural.py 2>&1 | tee "$OUT/tests.txt" || status=1

echo "== 2. comparison =="
timeout 270 python -m worldsim.bench.neural --compare --seconds "$SECONDS_PER_ROW" \
    --json "$OUT/compare.json" 2>&1 | tee "$OUT/compare.txt" || status=1

echo "== 3. kernels vs PyTorch references =="
timeout 90 python -m worldsim.kernels.bench --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.txt" || status=1

echo "== 4. default engine (graph, bf16) at 1 and 64 sessions =="
for s in 1 64; do
    timeout 40 python -m worldsim.bench.neural --sessions "$s" --seconds "$SECONDS_PER_ROW" \
        --json "$OUT/engine-s$s.json" 2>&1 | tee -a "$OUT/engine.txt" || status=1
done
exit $status
