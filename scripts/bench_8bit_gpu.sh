#!/usr/bin/env bash
# 8-bit weights on one GPU in one command (issue 6, deliverables 2c and 4), everything under $OUT:
#   0. fp8 fast-path check: Fp8Linear through torch._scaled_mm == its emulation   -> fp8check.txt
#   1. the GPU tests of the int8 kernel and the 8-bit engine (real Triton kernel on CUDA) -> tests.txt
#   2. worldsim.kernels.bench: the Triton int8 matmul vs the cast-matmul vs the fp linear vs fp8 _scaled_mm at
#      tiny / base (384) / 512-wide shapes, 1/16/64 sessions (plus the other kernels) -> kernels.json/.txt
#   3. worldsim.bench.quant on the shipped tiny checkpoint: fp / int8 / int8-triton / fp8, eager and
#      CUDA graph, sessions 1/16/64, PSNR vs fp and vs the real game                   -> quant-tiny.json/.txt
#   4. the same on `base` shapes with random weights (speed; PSNR vs fp only)        -> quant-base.json/.txt
# Each stage has its own timeout (sum < 10 min).
#
#   OUT=/some/dir scripts/bench_8bit_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-runs/bench-8bit}"
FRAMES="${FRAMES:-30}"
mkdir -p "$OUT"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
python -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])" | tee -a "$OUT/gpu.txt"

echo "== 0. fp8 fast path (torch._scaled_mm) vs emulation =="
timeout 60 python - <<'PY' 2>&1 | tee "$OUT/fp8check.txt" || status=1
import torch
from torch import nn
import worldsim.engine.fp8 as f8
torch.manual_seed(0)
print("capability", torch.cuda.get_device_capability())
for K, N, M in ((256, 768, 64), (384, 1152, 1024), (1024, 256, 4096), (40, 24, 64)):
    lin = nn.Linear(K, N).cuda()
    q = f8.Fp8Linear.from_linear(lin, torch.tensor([4.0, 3.0, 5.0]), f8.PassIndex()).to(torch.bfloat16)
    q.pass_state.value = 1
    x = (torch.randn(M, K, device="cuda") * 1.5).bfloat16()
    fast = q(x)
    ok = f8._scaled_mm_ok(x, K, N) and q.fast
    emu = ((f8.quantize_fp8_act(x, q.current_scale()).float() * q.current_scale()) @ q.dequantized().t()
           + q.bias.float()).bfloat16()
    err = ((fast.float() - emu.float()).norm() / emu.float().norm()).item()
    print(f"K={K} N={N} M={M}: {'_scaled_mm' if ok else 'emulation'}, rel diff vs emulation {err:.2e}")
PY

echo "== 1. GPU tests (int8 kernel, fp8, int8) =="
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_kernels_w8.py tests/test_quant_fp8.py \
    tests/test_quant.py 2>&1 | tee "$OUT/tests.txt" || status=1

echo "== 2. kernels vs PyTorch (incl. the int8 weight matmul) =="
timeout 150 python -m worldsim.kernels.bench --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.txt" || status=1

echo "== 3. 8-bit comparison, tiny checkpoint =="
timeout 170 python -m worldsim.bench.quant --checkpoint tiny --batches 1,16,64 --graph --frames "$FRAMES" \
    --json "$OUT/quant-tiny.json" 2>&1 | tee "$OUT/quant-tiny.txt" || status=1

echo "== 4. 8-bit comparison, base shapes (random weights) =="
timeout 150 python -m worldsim.bench.quant --preset base --batches 1,16,64 --graph --frames "$FRAMES" \
    --fidelity-frames 16 --json "$OUT/quant-base.json" 2>&1 | tee "$OUT/quant-base.txt" || status=1
exit $status
