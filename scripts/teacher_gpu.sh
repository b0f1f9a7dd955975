#!/usr/bin/env bash
# Teacher training at full speed on one GPU, in stages that fit a lent machine's limits:
#
#   OUT=/tmp/o scripts/teacher_gpu.sh bench     # bench train --compare, tiny and base presets (~6 min)
#   OUT=/tmp/o scripts/teacher_gpu.sh train     # start the tiny and base teacher runs in the background
#   OUT=/tmp/o scripts/teacher_gpu.sh recipe    # start the tiny teacher on the context recipe (corrupt.py)
#   OUT=/tmp/o scripts/teacher_gpu.sh status    # where the runs are (tail of their logs)
#   OUT=/tmp/o scripts/teacher_gpu.sh collect   # the compact train states + metrics into $OUT
#   OUT=/tmp/o scripts/teacher_gpu.sh export    # each run's 8-bit checkpoint + card into $OUT
#
# Runs live in $RUN (default /tmp/wsrun), outside the checkout: a later call that carries paths into the
# checkout must not replace a running job's folder. `train` takes the fastest variant the bench measured
# (compile, attention) and resumes a run found in $RUN/<name> or copied into $RESUME/<name> (the compact
# state from an earlier machine). Every stage tees a short summary into $OUT/<stage>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for what comes back}
RUN=${RUN:-/tmp/wsrun}
MIN=${MIN:-15}
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"

flags_of() {  # the --compile / --attention flags of the best variant in a bench JSON (none if missing)
  python3 - "$1" <<'EOF'
import json, sys
try:
    best = json.load(open(sys.argv[1]))["best"]
except Exception:
    print(""); raise SystemExit
f = []
if "+compile+" in best: f.append("--compile")
if best.endswith("+flex"): f += ["--attention", "flex"]
print(" ".join(f))
EOF
}

start_run() {  # name, then the teacher's flags
  local name=$1; shift
  local dir="$RUN/$name" resume=()
  if [ -n "${RESUME:-}" ] && [ -d "$RESUME/$name" ] && [ ! -d "$dir" ]; then cp -r "$RESUME/$name" "$dir"; fi
  if [ -f "$dir/teacher.pt" ] || [ -f "$dir/teacher.state.safetensors" ]; then resume=(--resume); fi
  setsid nohup python3 -m worldsim train teacher --device cuda --out "$dir" --no-progress --minutes "$MIN" \
    "${resume[@]}" "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
  echo "started $name (pid $!, ${resume[*]:-new run}): $*" | tee -a "$OUT/train.log"
}

case "${1:-}" in
  bench)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/bench.log"
    for p in tiny base; do
      python3 -m worldsim bench train --compare --preset "$p" --device cuda --seconds "${BENCH_S:-8}" \
        --json "$OUT/bench_train_$p.json" 2>&1 | grep -v "^W" | tee -a "$OUT/bench.log"
    done
    ;;
  train)
    tf=$(flags_of "$OUT/bench_train_tiny.json"); bf=$(flags_of "$OUT/bench_train_base.json")
    # tiny: the shipped teacher fine-tuned to a 32-frame window (sparse: local 8, 2 of 8 layers global),
    # clips of 3 windows, context noise up to 0.5; base: from scratch on the shipped base autoencoder.
    # shellcheck disable=SC2086
    start_run tiny32 --init tiny --window 32 --local-window 8 --global-every 4 --clip-frames 96 \
      --context-max 0.5 --lr 2e-4 --warmup 200 --batch 64 --steps 200000 --ckpt-every 1000 $tf
    # shellcheck disable=SC2086
    start_run base --preset base --autoencoder base --clip-frames 64 --context-max 0.5 \
      --batch 32 --steps 200000 --ckpt-every 1000 --refresh-fraction 0.02 $bf
    ;;
  recipe)
    # tiny from the shipped window-32 teacher, on the recipe for long rollouts: context levels <= 0.1 with
    # 30% of the context frames up to 0.5, colour offsets on a quarter of the context frames, a quarter of
    # the rows on the model's own predictions; clips of 3 windows. Flags: the H200's fastest variant.
    # $TEACHER_INIT (default the shipped tiny), $TEACHER_FLAGS added (e.g. --prev-frame: frame stacking)
    # shellcheck disable=SC2086
    start_run tinyr --init "${TEACHER_INIT:-tiny}" ${TEACHER_FLAGS:-} --window 32 --local-window 8 --global-every 4 --clip-frames 96 \
      --context-max 0.1 --context-aug-prob 0.3 --context-aug-max 0.5 --context-offset 0.3 --own-prob 0.25 \
      --lr 2e-4 --warmup 200 --batch 64 --steps 200000 --ckpt-every 500 ${RECIPE_FLAGS:---compile --attention flex}
    ;;
  export)
    for d in "$RUN"/*/; do
      name=$(basename "$d"); [ -f "$d/teacher.pt" ] || continue
      python3 -m worldsim train export "$d/teacher.pt" "$RUN/export/$name.safetensors" --int8 2>&1 | tail -n 2 | tee -a "$OUT/export.log"
      cp "$RUN/export/$name.safetensors" "$RUN/export/$name.md" "$OUT/" 2>/dev/null
    done
    ;;
  status)
    for f in "$RUN"/*.log; do echo "== $f"; tail -n 3 "$f"; done 2>&1 | tee "$OUT/status.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader | tee -a "$OUT/status.log"
    ;;
  collect)
    for name in ${NAMES:-tiny32 base tinyr}; do
      d="$RUN/$name"
      [ -d "$d" ] || continue
      cp "$d"/teacher.state*.safetensors "$OUT/" 2>/dev/null && for f in "$OUT"/teacher.state*; do
        mv "$f" "$OUT/$name.${f##*/teacher.}"; done
      [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$OUT/$name-metrics.jsonl"
      { echo "== $name"; tail -n 5 "$RUN/$name.log"; } | tee -a "$OUT/collect.log"
    done
    ;;
  *)
    sed -n 2,12p "$0"; exit 2 ;;
esac
