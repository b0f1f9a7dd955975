#!/usr/bin/env bash
# Self-forcing on one GPU (docs/design.md §7.3): the student, the baseline, their evals and the
# comparison plot, everything under $OUT. Fits ~10 minutes on one H100 with the defaults.
#
#   OUT=/some/dir scripts/self_forcing_gpu.sh                     # all stages below, tiny teacher
#   TEACHER=runs/gpu-base/teacher/teacher.pt PRESET=base scripts/self_forcing_gpu.sh
#   scripts/self_forcing_gpu.sh student eval                      # stages in separate calls
#   LONG_FRAMES=18000 scripts/self_forcing_gpu.sh long            # the 18,000-frame run (~6 min tiny)
#
# Stages: student (self-forcing, SF_MIN min), baseline (--context true, same steps and budget),
# reg (self-forcing + regression to the real frames, only when asked: `... reg`), eval (quick eval
# of teacher, student, baseline[, reg] + compare plot + the student's card), long (long run).
# What comes back in $OUT: $PRESET-student.safetensors (+ .md card), eval-*.json, compare.png,
# summary.txt, logs.tar.gz (train logs, loss plots, eval plots and videos).
# CPU smoke test: DEVICE=cpu TEACHER=/tmp/t.safetensors PRESET=test SF_STEPS=2 OUT=/tmp/o scripts/self_forcing_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

STAGES=" ${*:-student baseline eval} "
has() { [[ "$STAGES" == *" $1 "* ]]; }
PRESET="${PRESET:-tiny}"
TEACHER="${TEACHER:-checkpoints/$PRESET.safetensors}"
OUT="${OUT:-runs/out-sf-$PRESET}"
RUN_DIR="${RUN_DIR:-runs/sf-$PRESET}"
DEVICE="${DEVICE:-cuda}"
SF_MIN="${SF_MIN:-3}"
SF_STEPS="${SF_STEPS:-100000}"
SF_BATCH="${SF_BATCH:-16}"
SF_ARGS="${SF_ARGS:-}"
REG_WEIGHT="${REG_WEIGHT:-1.0}"
EVAL_ARGS="${EVAL_ARGS:-}"
LONG_FRAMES="${LONG_FRAMES:-18000}"
mkdir -p "$OUT" "$RUN_DIR"
T0=$(date +%s)
stage() { echo "=== $1 ($(($(date +%s) - T0)) s) ===" | tee -a "$RUN_DIR/pipeline.log"; }

train() {  # train NAME CONTEXT [extra args...]
  local name="$1" context="$2"; shift 2
  stage "$name: $SF_MIN min, context $context"
  rm -rf "$RUN_DIR/$name"
  # shellcheck disable=SC2086
  python -m worldsim train self-forcing --teacher "$TEACHER" --context "$context" --device "$DEVICE" \
    --minutes "$SF_MIN" --steps "$SF_STEPS" --batch "$SF_BATCH" --out "$RUN_DIR/$name" --no-progress \
    --log-every 25 --ckpt-every 200 --export "$RUN_DIR/$name/$PRESET-$name.safetensors" $SF_ARGS "$@" \
    2>&1 | tee "$RUN_DIR/$name.log"
}

has student && train student self
has baseline && train baseline true
has reg && train reg self --regression-weight "$REG_WEIGHT"

evaluate() {  # evaluate NAME CHECKPOINT [extra args...]
  local name="$1" ckpt="$2"; shift 2
  [ -f "$ckpt" ] || { echo "no $ckpt: skipping its eval"; return 0; }
  stage "eval $name"
  # shellcheck disable=SC2086
  python -m worldsim eval --checkpoint "$ckpt" --device "$DEVICE" --json "$OUT/eval-$name.json" \
    --out "$RUN_DIR/eval-$name" $EVAL_ARGS "$@" 2>&1 | tee "$RUN_DIR/eval-$name.log"
}

if has eval; then
  evaluate teacher "$TEACHER" --quick
  evaluate student "$RUN_DIR/student/$PRESET-student.safetensors" --quick
  evaluate baseline "$RUN_DIR/baseline/$PRESET-baseline.safetensors" --quick
  evaluate reg "$RUN_DIR/reg/$PRESET-reg.safetensors" --quick
  CMP=()
  for n in teacher student baseline reg; do [ -f "$OUT/eval-$n.json" ] && CMP+=("$n=$OUT/eval-$n.json"); done
  python -m worldsim eval --compare "${CMP[@]}" --out "$OUT" | tee "$RUN_DIR/compare.log"
  if [ -f "$RUN_DIR/student/self_forcing.pt" ]; then
    python -m worldsim.train.sf_state "$RUN_DIR/student/self_forcing.pt" "$OUT/$PRESET-student.safetensors" \
      --eval-json "$OUT/eval-student.json"
  fi
fi

if has long; then
  evaluate student-long "$RUN_DIR/student/$PRESET-student.safetensors" --long-frames "$LONG_FRAMES" \
    --no-loop --idle-frames 2000
fi

stage "bundle"
python - "$RUN_DIR" "$OUT" "$(($(date +%s) - T0))" <<'EOF' | tee "$OUT/summary.txt"
import json, sys, tarfile
from pathlib import Path
run, out, secs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
print(f"self-forcing pipeline: {secs} s")
for p in sorted(out.glob("eval-*.json")):
    r = json.loads(p.read_text())
    acc = (r.get("action_accuracy") or {}).get("generated", {})
    loop = (r.get("loop") or {}).get("turn_180_and_back", {})
    lr = r.get("long_run") or {}
    print(f"{p.stem}: PSNR {r['psnr']} | action exact {acc.get('exact')} per-key {acc.get('per_key')} | "
          f"loop end {loop.get('psnr_end_vs_real')} dB | idle collapsed {r['idle']['collapsed']} | "
          f"long run nan {lr.get('nan')} in range {lr.get('in_range')}")
for p in sorted(run.glob("*/self_forcing.json")):
    print(p.parent.name, json.loads(p.read_text()))
with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
    for p in sorted(run.rglob("*")):
        if p.is_file() and p.suffix in {".log", ".png", ".json", ".mp4", ".gif", ".md"} and p.stat().st_size < 8 << 20:
            tar.add(p, arcname=str(p.relative_to(run)))
EOF
