#!/usr/bin/env bash
# The second H100 speed table (README "Folding, steps, 8-bit and sparse"), everything under $OUT, ~5 min:
#   1. base shapes (random weights), one CUDA graph per frame: cache write folded vs a separate pass,
#      at 1 and 64 sessions (4 steps)                                        -> base-fold.json
#   2. base shapes, folded, steps 2 and 1, without and with the fused adaLN kernel -> base-steps.json
#   3. fp / int8 / int8-triton / fp8 weights, eager and graph, batch 1/16/64  -> quant-base.json
#   4. dense vs sparse (local 8 frames, every 3rd layer global) at windows 32 and 128, graph with SDPA vs
#      graph with the Triton ring attention, sessions 1/16/64                -> sparse-base.json
#
#   OUT=/some/dir scripts/bench_fold_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-runs/bench-fold}"
mkdir -p "$OUT"
status=0

echo "== 1. fold =="
timeout 90 python - "$OUT" <<'PY' || status=1
import json, sys, torch
from worldsim.bench.neural import build_world, measure_world
r = {}
for s in (1, 64):
    for f in (True, False):
        w = build_world(checkpoint=None, device=torch.device("cuda"), sessions=s, dtype=None, graph=True,
                        preset="base", fold=f)
        r[f"base sessions={s} fold={f}"] = measure_world(w, 5)["fps"]
        print(s, f, r[f"base sessions={s} fold={f}"], flush=True)
json.dump(r, open(f"{sys.argv[1]}/base-fold.json", "w"))
PY

echo "== 2. steps =="
timeout 60 python - "$OUT" <<'PY' || status=1
import json, sys, torch
from worldsim.bench.neural import build_world, measure_world
r = {}
for st in (2, 1):
    for k in (False, True):
        w = build_world(checkpoint=None, device=torch.device("cuda"), sessions=1, dtype=None, graph=True,
                        preset="base", steps=st, fold=True, kernels=k)
        r[f"base steps={st} fold graph kernels={k}"] = measure_world(w, 4)["fps"]
        print(st, k, r[f"base steps={st} fold graph kernels={k}"], flush=True)
json.dump(r, open(f"{sys.argv[1]}/base-steps.json", "w"))
PY

echo "== 3. 8-bit =="
timeout 120 python -m worldsim.bench.quant --preset base --batches 1,16,64 --graph \
  --json "$OUT/quant-base.json" || status=1

echo "== 4. sparse =="
timeout 100 python - "$OUT" <<'PY' || status=1
import json, sys, torch
from worldsim.bench.dense_sparse import sparse_rows
rows = sparse_rows(device=torch.device("cuda"), seconds=1, quick=False, modes=("graph", "graph+ring"),
                   dtype="bf16", on_row=lambda r: print(r["model"], r["mode"], r["sessions"], r["fps"], flush=True))
json.dump(rows, open(f"{sys.argv[1]}/sparse-base.json", "w"))
PY
exit $status
