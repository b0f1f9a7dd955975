#!/usr/bin/env bash
# A world model of a Gymnasium game, collect -> autoencoder -> teacher -> export -> eval, on one GPU:
#
#   OUT=/tmp/o ENV=ALE/Breakout-v5 NAME=breakout scripts/own_game_gpu.sh all      # in the background
#   OUT=/tmp/o NAME=breakout scripts/own_game_gpu.sh status
#   OUT=/tmp/o NAME=breakout scripts/own_game_gpu.sh collect-results              # checkpoint + logs
#
# Stage budgets in minutes: AE_MIN (autoencoder), TEACHER_MIN; the dataset: CLIPS x FRAMES frames at
# SIZE, WORKERS processes; DEVICE (cuda). AE_VARIANTS: autoencoders trained side by side
# ("name=flags;name=flags"); the one with the best held-out PSNR on the pixels that move (what the world
# model needs: a ball, a paddle) goes on to the teacher, which also takes GAME_TEACHER_FLAGS; AE=PATH
# (an autoencoder.pt of an earlier machine) skips the autoencoder stage; TEACHER_RESUME=FILE (the compact
# teacher.state.safetensors of an earlier machine) continues that teacher on a fresh LR schedule over
# TEACHER_MIN, its autoencoder with it (the dataset is collected again: the same seed, the same frames);
# STUDENT_MIN > 0 distils a 1-step
# student from the teacher on the dataset (streamed self-forcing) and exports it in 8 bits. Everything lives in $RUN/$NAME
# (outside the checkout); every stage tees its summary into $RUN/$NAME/summary.log, which `status` and
# `collect-results` copy into $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for what comes back}
NAME=${NAME:-breakout}
ENV=${ENV:-ALE/Breakout-v5}
RUN=${RUN:-/tmp/wsrun}
DIR="$RUN/$NAME"
CLIPS=${CLIPS:-1200}
FRAMES=${FRAMES:-256}
SIZE=${SIZE:-64}
WORKERS=${WORKERS:-14}
PRESET=${PRESET:-small}
AE_MIN=${AE_MIN:-4}
TEACHER_MIN=${TEACHER_MIN:-12}
AE_VARIANTS=${AE_VARIANTS:-ds8c32=--latent-channels 32 --motion-share 0.5;ds4c8=--downsample 4 --latent-channels 8 --motion-share 0.5}
GAME_TEACHER_FLAGS=${GAME_TEACHER_FLAGS:---motion-share 0.5}
TEACHER_FLAGS=${TEACHER_FLAGS---compile --attention flex}
AE=${AE:-}
TEACHER_RESUME=${TEACHER_RESUME:-}
STUDENT_INIT=${STUDENT_INIT:-}  # a student checkpoint of this game to continue (e.g. checkpoints/breakout.safetensors)
STUDENT_MIN=${STUDENT_MIN:-0}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" "$DIR"
export PYTHONUNBUFFERED=1
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$DIR/summary.log"; }

pipeline() {
  local t0=$SECONDS
  log "collect $ENV: $CLIPS clips x $FRAMES frames at ${SIZE}x$SIZE, $WORKERS workers"
  python3 -m worldsim collect --env "$ENV" --out "$DIR/data" --clips "$CLIPS" --frames "$FRAMES" \
    --size "$SIZE" --workers "$WORKERS" > "$DIR/collect.log" 2>&1 || { log "collect failed"; tail -n 5 "$DIR/collect.log" | tee -a "$DIR/summary.log"; return 1; }
  tail -n 2 "$DIR/collect.log" | tee -a "$DIR/summary.log"
  local teacher_from=(--preset "$PRESET" --autoencoder "$DIR/ae/autoencoder.pt" --steps 100000)
  if [ -n "$TEACHER_RESUME" ]; then
    [ -f "$TEACHER_RESUME" ] || { log "TEACHER_RESUME=$TEACHER_RESUME: no such file"; return 1; }
    mkdir -p "$DIR/teacher" && cp "$TEACHER_RESUME" "$DIR/teacher/teacher.state.safetensors"
    teacher_from=(--resume --steps 200000)  # --steps unlike the run's: a new cosine, fitted to TEACHER_MIN
    log "autoencoder: the resumed teacher's ($TEACHER_RESUME)"
  elif [ -n "$AE" ]; then
    [ -f "$AE" ] || { log "AE=$AE: no such file"; return 1; }
    mkdir -p "$DIR/ae-given" && cp "$AE" "$DIR/ae-given/autoencoder.pt" && ln -sfn "$DIR/ae-given" "$DIR/ae"
    log "autoencoder: $AE (given)"
  else
  log "autoencoders ($AE_MIN min, side by side): $AE_VARIANTS"
  local pids=() name flags
  IFS=';' read -ra variants <<< "$AE_VARIANTS"
  for v in "${variants[@]}"; do
    name=${v%%=*}; flags=${v#*=}
    # shellcheck disable=SC2086
    python3 -m worldsim train autoencoder --preset "$PRESET" --data "$DIR/data" --device "$DEVICE" --out "$DIR/ae-$name" \
      $flags --steps 100000 --minutes "$AE_MIN" --batch 64 --no-progress > "$DIR/ae-$name.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  best=$(python3 - "$DIR" 2>> "$DIR/summary.log" <<'PY'
import json, sys
from pathlib import Path
rows = []
for f in sorted(Path(sys.argv[1]).glob("ae-*/autoencoder.json")):
    m = json.loads(f.read_text())
    moving = m.get("heldout_moving_psnr_db")
    rows.append((moving if moving is not None else m["heldout_psnr_db"], m["heldout_psnr_db"], f.parent.name))
    print(f"{f.parent.name}: held-out PSNR {m['heldout_psnr_db']} dB, on the moving pixels {moving} dB", file=sys.stderr)
print(max(rows)[2] if rows else "")
PY
  )
  [ -n "$best" ] || { log "autoencoder failed"; tail -n 5 "$DIR"/ae-*.log | tee -a "$DIR/summary.log"; return 1; }
  ln -sfn "$DIR/$best" "$DIR/ae"
  log "autoencoder: $best"
  fi
  log "teacher ($TEACHER_MIN min)"
  python3 -m worldsim train teacher "${teacher_from[@]}" --data "$DIR/data" \
    --device "$DEVICE" --out "$DIR/teacher" --minutes "$TEACHER_MIN" --batch 64 --clip-frames 32 \
    --context-aug-prob 0.3 --context-offset 0.3 --own-prob 0.25 --ckpt-every 500 --no-progress \
    $GAME_TEACHER_FLAGS $TEACHER_FLAGS > "$DIR/teacher.log" 2>&1 || { log "teacher failed"; tail -n 5 "$DIR/teacher.log" | tee -a "$DIR/summary.log"; return 1; }
  grep "ema val loss" "$DIR/teacher.log" | tail -n 2 | tee -a "$DIR/summary.log"
  log "export"
  python3 -m worldsim train export "$DIR/teacher/teacher.pt" "$DIR/export/$NAME.safetensors" --int8 \
    > "$DIR/export.log" 2>&1 || { log "export failed"; tail -n 5 "$DIR/export.log" | tee -a "$DIR/summary.log"; return 1; }
  log "eval on the held-out clips"
  python3 -m worldsim eval --checkpoint "$DIR/export/$NAME.safetensors" --data "$DIR/data" --device "$DEVICE" \
    --json "$DIR/eval.json" --out "$DIR/eval" > "$DIR/eval.log" 2>&1 || log "eval failed"
  tail -n 25 "$DIR/eval.log" | tee -a "$DIR/summary.log"
  if [ "$STUDENT_MIN" != "0" ]; then
    local rollout=$(( (FRAMES - 16) / 8 * 8 ))  # a window of history and the rollout fit in one clip
    log "1-step student ($STUDENT_MIN min, streamed rollouts of $rollout recorded frames)"
    local init=(); [ -n "$STUDENT_INIT" ] && init=(--init "$STUDENT_INIT")
    python3 -m worldsim train self-forcing --teacher "$DIR/teacher/teacher.pt" "${init[@]}" --data "$DIR/data" --device "$DEVICE" \
      --out "$DIR/student" --minutes "$STUDENT_MIN" --steps 100000 --batch 16 --steps-per-frame 1 \
      --rollout-frames "$rollout" --regression-horizon 32 --ckpt-every 200 --no-progress \
      --export "$DIR/export/$NAME-student-bf16.safetensors" > "$DIR/student.log" 2>&1 \
      || { log "student failed"; tail -n 5 "$DIR/student.log" | tee -a "$DIR/summary.log"; return 1; }
    python3 -c "import sys; from worldsim.engine.quant import export_int8; export_int8(sys.argv[1], sys.argv[2])" \
      "$DIR/export/$NAME-student-bf16.safetensors" "$DIR/export/$NAME-student.safetensors" >> "$DIR/student.log" 2>&1
    python3 -m worldsim eval --checkpoint "$DIR/export/$NAME-student.safetensors" --data "$DIR/data" --device "$DEVICE" \
      --json "$DIR/student-eval.json" --out "$DIR/student-eval" > "$DIR/student-eval.log" 2>&1 || log "student eval failed"
    tail -n 12 "$DIR/student-eval.log" | tee -a "$DIR/summary.log"
  fi
  log "done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
}

case "${1:-}" in
  all)
    export STUDENT_MIN AE TEACHER_RESUME STUDENT_INIT DEVICE DIR ENV NAME CLIPS FRAMES SIZE WORKERS PRESET AE_MIN TEACHER_MIN \
      AE_VARIANTS GAME_TEACHER_FLAGS TEACHER_FLAGS
    setsid nohup bash -c "$(declare -f log pipeline); pipeline" > "$DIR/pipeline.log" 2>&1 < /dev/null &
    echo "started the $NAME pipeline (pid $!) in $DIR" | tee -a "$OUT/$NAME-start.log"
    ;;
  status)
    cp "$DIR/summary.log" "$OUT/$NAME-summary.log" 2>/dev/null
    tail -n 4 "$DIR/summary.log" "$DIR"/*.log 2>/dev/null | tail -n 40
    ;;
  collect-results)
    cp "$DIR/summary.log" "$OUT/$NAME-summary.log" 2>/dev/null
    cp "$DIR/export/$NAME.safetensors" "$DIR/export/$NAME.md" "$DIR/export/$NAME-student.safetensors" "$OUT/" 2>/dev/null
    cp "$DIR/eval.json" "$OUT/$NAME-eval.json" 2>/dev/null
    cp "$DIR/student-eval.json" "$OUT/$NAME-student-eval.json" 2>/dev/null
    ls -la "$OUT"
    ;;
  *)
    sed -n 2,13p "$0"; exit 2 ;;
esac
