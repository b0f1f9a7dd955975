#!/usr/bin/env bash
# Sparse attention on one GPU (issue 6, deliverable 3), everything under $OUT. Stages (one device call
# each, every one < 10 min with the defaults):
#   tests        tests/test_sparse.py on CUDA (compiled flex vs SDPA, cache vs full)       -> tests.txt
#   speed        python -m worldsim.bench.sparse --kernels: base shapes, random weights, windows 32/128,
#                dense vs L8/G3, eager / graph / graph+k, sessions 1/16/64                  -> speed.json/.txt
#   fidelity     for each W in $WINDOWS: fine-tune the shipped tiny teacher at window W for $FT_MIN minutes,
#                dense and sparse (--local-window $LOCAL --global-every $EVERY) from the same weights
#                and budget, export both, `worldsim eval --quick` both                     -> fid-*.json, fidelity.txt
#
#   OUT=/some/dir scripts/sparse_gpu.sh tests speed
#   OUT=/some/dir WINDOWS=32 scripts/sparse_gpu.sh fidelity      # then WINDOWS=128 in a second call
# CPU smoke: DEVICE=cpu WINDOWS=32 FT_MIN=0.1 FT_STEPS=2 BATCH_32=1 EVAL_ARGS="--sequences 1 --idle-frames 4
#   --no-loop --no-action" OUT=/tmp/o scripts/sparse_gpu.sh fidelity
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-runs/sparse}"
RUN_DIR="${RUN_DIR:-runs/sparse-work}"
DEVICE="${DEVICE:-cuda}"
WINDOWS="${WINDOWS:-32}"
LOCAL="${LOCAL:-8}"
EVERY="${EVERY:-4}"  # tiny has depth 8: layers 3 and 7 global
FT_MIN="${FT_MIN:-3}"
FT_STEPS="${FT_STEPS:-100000}"
SECONDS_PER_ROW="${SECONDS_PER_ROW:-2}"
EVAL_ARGS="${EVAL_ARGS:-}"
STAGES=" ${*:-tests speed} "
has() { [[ "$STAGES" == *" $1 "* ]]; }
mkdir -p "$OUT" "$RUN_DIR"
status=0

if has tests; then
  echo "== sparse tests ($DEVICE) =="
  timeout 300 python -m pytest -q -p no:cacheprovider tests/test_sparse.py 2>&1 | tee "$OUT/tests.txt" || status=1
fi

if has speed; then
  echo "== dense vs sparse speed =="
  timeout 560 python -m worldsim.bench.sparse --device "$DEVICE" --kernels --seconds "$SECONDS_PER_ROW" \
    --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.txt" || status=1
fi

if has fidelity; then
  for W in $WINDOWS; do
    batch_var="BATCH_$W"
    B="${!batch_var:-$(( W >= 128 ? 8 : 32 ))}"  # 1.5 x W frames per clip: fewer clips at long windows
    for variant in dense sparse; do
      name="w$W-$variant"
      mask=""
      [ "$variant" = sparse ] && mask="--local-window $LOCAL --global-every $EVERY"
      echo "== $name: fine-tune tiny at window $W, batch $B, $FT_MIN min =="
      rm -rf "$RUN_DIR/$name"
      # shellcheck disable=SC2086
      timeout $(( ${FT_MIN%.*} * 60 + 150 )) python -m worldsim train teacher --init tiny --window "$W" $mask \
        --device "$DEVICE" --minutes "$FT_MIN" --steps "$FT_STEPS" --batch "$B" --lr 2e-4 --warmup 50 \
        --out "$RUN_DIR/$name" --no-progress --export "$RUN_DIR/$name.safetensors" \
        2>&1 | tail -n 5 | tee "$OUT/train-$name.txt" || status=1
      cp "$RUN_DIR/$name/teacher.json" "$OUT/train-$name.json" 2>/dev/null || status=1
      # shellcheck disable=SC2086
      timeout 240 python -m worldsim eval --quick --checkpoint "$RUN_DIR/$name.safetensors" --device "$DEVICE" \
        --json "$OUT/fid-$name.json" --out "$RUN_DIR/eval-$name" $EVAL_ARGS 2>&1 | tail -n 3 || status=1
    done
  done
  python - "$OUT" <<'PY' | tee "$OUT/fidelity.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'run':<14} {'steps':>6} {'ema val loss':>12}  PSNR by horizon (dB)")
for f in sorted(out.glob("fid-*.json")):
    name = f.stem[4:]
    ev = json.loads(f.read_text())
    tr = json.loads((out / f"train-{name}.json").read_text()) if (out / f"train-{name}.json").exists() else {}
    psnr = "  ".join(f"h{h}:{v:.2f}" for h, v in ev.get("psnr", {}).items())
    print(f"{name:<14} {tr.get('steps', '-'):>6} {tr.get('ema_val_loss', float('nan')):>12.4f}  {psnr}")
PY
fi
exit $status
