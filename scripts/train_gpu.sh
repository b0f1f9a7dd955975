#!/usr/bin/env bash
# The whole training pipeline for one preset in one GPU command (docs/design.md §7):
#   autoencoder -> teacher -> export (safetensors + card) -> quick eval, everything under $OUT.
#
#   OUT=/some/dir scripts/train_gpu.sh                 # tiny, ~14 min on one H100
#   PRESET=tiny AE_MIN=3 TEACHER_MIN=8 scripts/train_gpu.sh all
#   scripts/train_gpu.sh ae teacher; scripts/train_gpu.sh export eval   # stages in separate calls
#     ($RUN_DIR, under the git-ignored runs/, persists between calls on the same machine;
#      TEACHER_RESUME=1 continues the teacher of an earlier call)
#
# Budgets are wall-clock minutes (--minutes), so the run cannot overrun; step counts are upper bounds.
# What comes back in $OUT (few files, each <= 16 MiB): $PRESET.safetensors, $PRESET.md (card),
# eval.json, summary.txt, logs.tar.gz (logs, loss plots, metrics JSON, eval plot and video).
# CPU smoke test: DEVICE=cpu PRESET=test AE_STEPS=20 TEACHER_STEPS=20 EVAL_ARGS="--idle-frames 8" OUT=/tmp/o scripts/train_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

STAGES=" ${*:-all} "
has() { [[ "$STAGES" == *" all "* || "$STAGES" == *" $1 "* ]]; }
PRESET="${PRESET:-tiny}"
OUT="${OUT:-runs/out-$PRESET}"
RUN_DIR="${RUN_DIR:-runs/gpu-$PRESET}"
DEVICE="${DEVICE:-cuda}"
AE_MIN="${AE_MIN:-3}"
AE_STEPS="${AE_STEPS:-100000}"
AE_BATCH="${AE_BATCH:-64}"
TEACHER_MIN="${TEACHER_MIN:-8}"
TEACHER_STEPS="${TEACHER_STEPS:-100000}"
TEACHER_BATCH="${TEACHER_BATCH:-32}"
TEACHER_ARGS="${TEACHER_ARGS:-}"
EVAL_ARGS="${EVAL_ARGS:-}"
COMPILE="${COMPILE:---compile}"
RESUME=""
[ "${TEACHER_RESUME:-0}" = 1 ] && RESUME="--resume"
[ "$DEVICE" = "cpu" ] && COMPILE=""
mkdir -p "$OUT" "$RUN_DIR"
LOG="$RUN_DIR/pipeline.log"
T0=$(date +%s)

stage() { echo "=== $1 ($(($(date +%s) - T0)) s) ===" | tee -a "$LOG"; }

if has ae; then
  stage "autoencoder: $AE_MIN min"
  python -m worldsim train autoencoder --preset "$PRESET" --device "$DEVICE" --minutes "$AE_MIN" \
    --steps "$AE_STEPS" --batch "$AE_BATCH" --out "$RUN_DIR/ae" --no-progress --log-every 250 \
    2>&1 | tee "$RUN_DIR/autoencoder.log"
fi

if has teacher; then
  stage "teacher: $TEACHER_MIN min"
  # shellcheck disable=SC2086
  python -m worldsim train teacher --preset "$PRESET" --device "$DEVICE" --minutes "$TEACHER_MIN" \
    --steps "$TEACHER_STEPS" --batch "$TEACHER_BATCH" --autoencoder "$RUN_DIR/ae/autoencoder.pt" \
    --out "$RUN_DIR/teacher" --no-progress --log-every 250 $COMPILE $RESUME $TEACHER_ARGS \
    2>&1 | tee -a "$RUN_DIR/teacher.log"
fi

if has export; then
  stage "export"
  python -m worldsim train export "$RUN_DIR/teacher/teacher.pt" "$OUT/$PRESET.safetensors" \
    --autoencoder-metrics "$RUN_DIR/ae/autoencoder.json" 2>&1 | tee "$RUN_DIR/export.log"
fi

if has eval; then
  stage "quick eval"
  # shellcheck disable=SC2086
  python -m worldsim eval --checkpoint "$OUT/$PRESET.safetensors" --quick --device "$DEVICE" \
    --json "$OUT/eval.json" --out "$RUN_DIR/eval" $EVAL_ARGS 2>&1 | tee "$RUN_DIR/eval.log"
  # The card carries the eval figures too.
  python -m worldsim train export --card-only "$RUN_DIR/teacher/teacher.pt" "$OUT/$PRESET.safetensors" \
    --autoencoder-metrics "$RUN_DIR/ae/autoencoder.json" --eval-json "$OUT/eval.json"
fi

stage "bundle"
python - "$RUN_DIR" "$OUT" "$PRESET" "$(($(date +%s) - T0))" <<'EOF' | tee "$OUT/summary.txt"
import json, sys, tarfile
from pathlib import Path
run, out, preset, secs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return {}
ae, te, ev = load(run / "ae/autoencoder.json"), load(run / "teacher/teacher.json"), load(out / "eval.json")
rows = [
    ("autoencoder steps", ae.get("steps")), ("AE held-out PSNR (dB)", ae.get("heldout_psnr_db")),
    ("AE decode ms/frame CPU", ae.get("decode_ms_per_frame_cpu")), ("AE decode ms/frame CUDA", ae.get("decode_ms_per_frame_cuda")),
    ("teacher steps", te.get("steps")), ("teacher steps/s", te.get("steps_per_second")),
    ("teacher final loss", te.get("final_loss")), ("teacher EMA val loss", te.get("ema_val_loss")),
]
for h, v in ev.get("psnr", {}).items():
    rows.append((f"eval PSNR @{h} (copy-last)", f"{v} ({ev['baseline_copy_last']['psnr'][h]})"))
for h, v in ev.get("ssim", {}).items():
    rows.append((f"eval SSIM @{h}", v))
if ev:
    rows.append(("idle in range / collapsed", f"{ev['idle']['in_range']} / {ev['idle']['collapsed']}"))
ck = out / f"{preset}.safetensors"
rows.append(("checkpoint MiB", round(ck.stat().st_size / 2**20, 2) if ck.exists() else None))
rows.append(("pipeline seconds", secs))
print(f"\n{'summary (' + preset + ')':<32} value")
for k, v in rows:
    print(f"{k:<32} {v}")
with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
    for p in sorted(run.rglob("*")):
        if p.is_file() and p.suffix in {".log", ".json", ".png", ".mp4"}:
            tar.add(p, arcname=str(p.relative_to(run)))
EOF
