#!/usr/bin/env bash
# Multi-GPU scaling on one host with >= 2 GPUs (issue 7; written for nvidia-h200-x2):
#   train: teacher training throughput, 1 GPU vs 2 GPUs under torchrun (DDP, NCCL), same per-GPU batch.
#          Target: steady clips/s with 2 GPUs >= 1.8x one GPU.
#   serve: most real-time sessions served at >= 27 fps (p99 <= 50 ms) by 1 engine vs 2 engines (one per
#          GPU) behind one endpoint (scripts/serve_scaling.py). Target: 2 engines serve >= 2x the sessions.
#
#   OUT=/some/dir scripts/multi_gpu_bench.sh            # both stages (~4 + ~5 min)
#   scripts/multi_gpu_bench.sh train; scripts/multi_gpu_bench.sh serve    # one stage per call
#   STEPS=400 BATCH=32 COMPILE=--compile SESSIONS="8 16 32 64" SECONDS_PER_RUN=8   # the defaults
# CPU smoke test (2 gloo ranks, 2 CPU engines of the game):
#   DEVICE=cpu PRESET=test STEPS=30 BATCH=2 SESSIONS=2 OUT=/tmp/o scripts/multi_gpu_bench.sh
# Results: $OUT/train_scaling.txt, $OUT/t{1,2}.json (teacher metrics), $OUT/serve_scaling.{txt,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

STAGES=" ${*:-all} "
has() { [[ "$STAGES" == *" all "* || "$STAGES" == *" $1 "* ]]; }
OUT="${OUT:-runs/multi-gpu}"
RUN_DIR="${RUN_DIR:-runs/multi-gpu-work}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-tiny}"
STEPS="${STEPS:-400}"
BATCH="${BATCH:-32}"
COMPILE="${COMPILE:---compile}"
SESSIONS="${SESSIONS:-8 16 32 64}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-8}"
[ "$DEVICE" = "cpu" ] && COMPILE="" && export OMP_NUM_THREADS=1
mkdir -p "$OUT" "$RUN_DIR"

if [ "$DEVICE" = "cuda" ]; then
  nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUT/gpus.txt"
  n=$(python -c "import torch; print(torch.cuda.device_count())")
  [ "$n" -ge 2 ] || { echo "need >= 2 GPUs, torch sees $n" >&2; exit 2; }
fi

if has train; then
  echo "=== train: autoencoder for the teacher's latents (quality is not measured here) ==="
  [ -f "$RUN_DIR/ae/autoencoder.pt" ] || python -m worldsim train autoencoder --preset "$PRESET" \
    --device "$DEVICE" --steps 200 --batch 64 --out "$RUN_DIR/ae" --no-progress --log-every 100
  for n in 1 2; do
    echo "=== train: teacher on $n rank(s), batch $BATCH per rank, $STEPS steps ==="
    rm -rf "$RUN_DIR/t$n"
    vis=""
    [ "$DEVICE" = "cuda" ] && vis=$(seq -s, 0 $((n - 1)))
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES="${vis:-${CUDA_VISIBLE_DEVICES:-}}" torchrun --standalone --nproc_per_node "$n" \
      -m worldsim train teacher --preset "$PRESET" --device "$DEVICE" --steps "$STEPS" --batch "$BATCH" \
      --autoencoder "$RUN_DIR/ae/autoencoder.pt" --out "$RUN_DIR/t$n" --no-progress --log-every 100 \
      --ckpt-every 1000000 $COMPILE 2>&1 | tee "$RUN_DIR/t$n.log"
    cp "$RUN_DIR/t$n/teacher.json" "$OUT/t$n.json"
  done
  python - "$OUT" <<'EOF' | tee "$OUT/train_scaling.txt"
import json, sys
out = sys.argv[1]
m = [json.load(open(f"{out}/t{n}.json")) for n in (1, 2)]
for n, x in zip((1, 2), m):
    print(f"{n} rank(s): {x['steady_clips_per_second']} clips/s steady ({x['clips_per_second']} overall), "
          f"batch {x['batch']}/rank, {x['steps']} steps, final loss {x['final_loss']}, {x['device']}")
r = m[1]["steady_clips_per_second"] / m[0]["steady_clips_per_second"]
print(f"scaling 1 -> 2: {r:.2f}x (target >= 1.8x: {'met' if r >= 1.8 else 'NOT met'})")
EOF
fi

if has serve; then
  echo "=== serve: sessions at >= 27 fps, 1 engine vs 2 ==="
  if [ "$DEVICE" = "cpu" ]; then
    world=(--world game --size 32 --device cpu)
  else
    world=(--world neural)
  fi
  # shellcheck disable=SC2086
  python scripts/serve_scaling.py --engines 1 2 --sessions $SESSIONS "${world[@]}" \
    --seconds "$SECONDS_PER_RUN" --json "$OUT/serve_scaling.json" 2>&1 | tee "$OUT/serve_scaling.txt"
fi
