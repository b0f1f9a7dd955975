#!/usr/bin/env bash
# Issue 5 in one held H100 session: the tiny self-forcing variants and the whole base pipeline, side by
# side on one GPU. Tiny self-forcing is launch-bound (one CPU thread feeding small kernels), so several
# processes share the GPU at little cost to each; the base teacher is the one that uses the GPU's math.
#
#   OUT=/some/dir scripts/distill_sweep_gpu.sh tiny      # the six tiny variants side by side (~10 GiB each)
#   OUT=/some/dir scripts/distill_sweep_gpu.sh base      # the base pipeline, alone on the GPU
#   scripts/distill_sweep_gpu.sh status                  # progress of every run (poll this)
#   scripts/distill_sweep_gpu.sh eval                    # quick evals + comparison plot (after tiny)
#   OUT=/some/dir scripts/distill_sweep_gpu.sh long      # two 1-step tiny students for LONG_MIN minutes
#   OUT=/some/dir scripts/distill_sweep_gpu.sh session   # base + long + GPU tests + sparse fidelity at
#                                                        # windows 32 and 128, all at once (one held H100)
# Run long stages detached (setsid nohup ... &) with RUN/OUT outside the repository copy, and poll.
# Measured on the H100 (2026-11-25): six tiny variants at once used ~10 GiB each and ran ~0.2 generator
# steps/s each; the base teacher started beside them ran out of memory (it needs ~20 GiB with
# --compile), which is why base now has its own stage.
# 'session' on one H100 (docs/experiments/base_and_long_tiny/): the base student needs > 42 GiB at batch 16
# and ran out of memory beside two tiny runs (10 GiB each) and two sparse fine-tunes (16-18 GiB each); start
# sparse at window 128 after window 32 and give the base student the card to itself. Base steps on the
# shared GPU: autoencoder 1,879 in 4 min, teacher 414 in 9 min (compiled), student 0.18 steps/s.
#
# Tiny variants (same teacher, same wall-clock budget SF_MIN, batch SF_BATCH):
#   sf2       self-forcing, 2 steps                         (DMD only)
#   sf2reg    self-forcing, 2 steps, + regression to the real frames on the student's own rollouts
#   sf2reglr  as sf2reg with a 5x learning rate
#   sf1reg    self-forcing, 1 step, + regression
#   bl2       baseline: true context (no self-forcing), 2 steps, DMD only
#   bl2reg    baseline: true context, 2 steps, + regression
# Base: autoencoder (BASE_AE_MIN) -> teacher (BASE_TEACHER_MIN) -> self-forcing student with the
# regression term, 2 steps (BASE_SF_MIN) -> quick eval.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
STAGE="${1:-tiny}"
OUT="${OUT:-runs/out-sweep}"
RUN="${RUN:-runs/sweep}"
SF_MIN="${SF_MIN:-11}"
SF_BATCH="${SF_BATCH:-16}"
BASE_AE_MIN="${BASE_AE_MIN:-4}"
BASE_TEACHER_MIN="${BASE_TEACHER_MIN:-9}"
BASE_SF_MIN="${BASE_SF_MIN:-5}"
LONG_MIN="${LONG_MIN:-16}"
TEACHER="${TEACHER:-checkpoints/tiny.safetensors}"
mkdir -p "$OUT" "$RUN"

sf() {  # sf NAME TEACHER MINUTES [args...]
  local name="$1" teacher="$2" minutes="$3"; shift 3
  python -m worldsim train self-forcing --teacher "$teacher" --device cuda --minutes "$minutes" \
    --steps 100000 --batch "$SF_BATCH" --out "$RUN/$name" --no-progress --log-every 25 --ckpt-every 100 \
    --export "$RUN/$name/$name.safetensors" "$@" > "$RUN/$name.log" 2>&1
  echo "$name exit $?" >> "$RUN/done.txt"
}

base_teacher() {
  PRESET=base AE_MIN="$BASE_AE_MIN" TEACHER_MIN="$BASE_TEACHER_MIN" OUT="$RUN/base-out" \
    RUN_DIR="$RUN/base" scripts/train_gpu.sh ae teacher export > "$RUN/base-pipeline.log" 2>&1
  echo "base-teacher exit $?" >> "$RUN/done.txt"
}

base_student() {  # > 42 GiB at batch 16: give it the GPU to itself
  sf basesf "$RUN/base/teacher/teacher.pt" "$BASE_SF_MIN" --context self --regression-weight 1 \
    --steps-per-frame 2
  # What ships is the 8-bit file (parts of <= 16 MiB); the eval is of that file.
  python -c "from worldsim.engine.quant import export_int8; export_int8('$RUN/basesf/basesf.safetensors', \
'$OUT/base-student.safetensors')" > "$RUN/export-basesf.log" 2>&1
  python -m worldsim eval --checkpoint "$OUT/base-student.safetensors" --quick --device cuda \
    --json "$OUT/eval-base-student.json" --out "$RUN/eval-basesf" > "$RUN/eval-basesf.log" 2>&1
  echo "eval-basesf exit $?" >> "$RUN/done.txt"
}

long_pair() {  # the CPU default's recipe (1 step, regression) with a longer budget, and a lighter regression
  sf sf1reg-long "$TEACHER" "$LONG_MIN" --context self --regression-weight 1 --steps-per-frame 1 &
  sf sf1reg03-long "$TEACHER" "$LONG_MIN" --context self --regression-weight 0.3 --steps-per-frame 1 &
  wait
  for n in sf1reg-long sf1reg03-long; do
    python -c "from worldsim.engine.quant import export_int8; export_int8('$RUN/$n/$n.safetensors', \
'$OUT/$n.safetensors')" >> "$RUN/export-long.log" 2>&1
    python -m worldsim eval --checkpoint "$OUT/$n.safetensors" --quick --device cuda \
      --json "$OUT/eval-$n.json" --out "$RUN/eval-$n" > "$RUN/eval-$n.log" 2>&1 &
  done
  wait
}

export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
case "$STAGE" in
tiny)
  rm -f "$RUN/done.txt"
  nvidia-smi --query-gpu=name,memory.used --format=csv
  sf sf2 "$TEACHER" "$SF_MIN" --context self &
  sf sf2reg "$TEACHER" "$SF_MIN" --context self --regression-weight 1 &
  sf sf2reglr "$TEACHER" "$SF_MIN" --context self --regression-weight 1 --lr 5e-5 --critic-lr 5e-5 &
  sf sf1reg "$TEACHER" "$SF_MIN" --context self --regression-weight 1 --steps-per-frame 1 &
  sf bl2 "$TEACHER" "$SF_MIN" --context true &
  sf bl2reg "$TEACHER" "$SF_MIN" --context true --regression-weight 1 &
  wait
  ;;
base)
  base_teacher
  base_student
  ;;
long)
  long_pair
  ;;
session)
  rm -f "$RUN/done.txt"
  # Peak memory: base teacher ~24 GiB + two tiny runs 10 GiB each + one sparse fine-tune 16-18 GiB.
  base_teacher &
  long_pair &
  (
    OUT="$OUT/sparse32" RUN_DIR="$RUN/sparse32" WINDOWS=32 scripts/sparse_gpu.sh fidelity > "$RUN/sparse32.log" 2>&1
    OUT="$OUT/sparse128" RUN_DIR="$RUN/sparse128" WINDOWS=128 scripts/sparse_gpu.sh fidelity > "$RUN/sparse128.log" 2>&1
  ) &
  timeout 600 python -m pytest -q -p no:cacheprovider tests/test_model_gpu.py tests/test_fold.py \
    tests/test_sparse.py > "$OUT/gpu-tests.txt" 2>&1
  echo "gpu-tests exit $?" >> "$RUN/done.txt"
  wait
  base_student
  ;;
status)
  date; cat "$RUN/done.txt" 2>/dev/null
  for f in "$RUN"/*.log "$RUN"/base/*.log "$RUN"/sparse*/*.log; do [ -f "$f" ] && echo "--- $f" && tail -n 2 "$f" | cut -c1-220; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
eval)
  python -m worldsim eval --checkpoint "$TEACHER" --quick --device cuda --json "$RUN/eval-teacher.json" \
    --out "$RUN/eval-teacher" > "$RUN/eval-teacher.log" 2>&1 &
  for n in sf2 sf2reg sf2reglr sf1reg bl2 bl2reg; do
    [ -f "$RUN/$n/$n.safetensors" ] || continue
    python -m worldsim eval --checkpoint "$RUN/$n/$n.safetensors" --quick --device cuda \
      --json "$RUN/eval-$n.json" --out "$RUN/eval-$n" > "$RUN/eval-$n.log" 2>&1 &
  done
  wait
  CMP=()
  for n in teacher sf2 sf2reg sf2reglr sf1reg bl2 bl2reg; do
    [ -f "$RUN/eval-$n.json" ] && CMP+=("$n=$RUN/eval-$n.json")
  done
  python -m worldsim eval --compare "${CMP[@]}" --out "$OUT" | tee "$OUT/compare.txt"
  ;;
*)
  echo "unknown stage $STAGE (tiny, base, long, session, status, eval)"; exit 2
  ;;
esac
