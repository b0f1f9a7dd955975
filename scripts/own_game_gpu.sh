#!/usr/bin/env bash
# A world model of a Gymnasium game, collect -> autoencoder -> teacher -> export -> eval, on one GPU:
#
#   OUT=/tmp/o ENV=ALE/Breakout-v5 NAME=breakout scripts/own_game_gpu.sh all      # in the background
#   OUT=/tmp/o NAME=breakout scripts/own_game_gpu.sh status
#   OUT=/tmp/o NAME=breakout scripts/own_game_gpu.sh collect-results              # checkpoint + logs
#
# Stage budgets in minutes: AE_MIN (autoencoder), TEACHER_MIN; the dataset: CLIPS x FRAMES frames at
# SIZE, WORKERS processes; LATENT, the autoencoder's latent channels (default the preset's). Everything
# lives in $RUN/$NAME (outside the checkout); every stage tees its summary into $RUN/$NAME/summary.log,
# which `status` and `collect-results` copy into $OUT.
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
LATENT=${LATENT:-}
mkdir -p "$OUT" "$DIR"
export PYTHONUNBUFFERED=1
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$DIR/summary.log"; }

pipeline() {
  local t0=$SECONDS
  log "collect $ENV: $CLIPS clips x $FRAMES frames at ${SIZE}x$SIZE, $WORKERS workers"
  python3 -m worldsim collect --env "$ENV" --out "$DIR/data" --clips "$CLIPS" --frames "$FRAMES" \
    --size "$SIZE" --workers "$WORKERS" > "$DIR/collect.log" 2>&1 || { log "collect failed"; tail -n 5 "$DIR/collect.log" | tee -a "$DIR/summary.log"; return 1; }
  tail -n 2 "$DIR/collect.log" | tee -a "$DIR/summary.log"
  log "autoencoder ($AE_MIN min${LATENT:+, $LATENT latent channels})"
  python3 -m worldsim train autoencoder --preset "$PRESET" --data "$DIR/data" --device cuda --out "$DIR/ae" \
    ${LATENT:+--latent-channels $LATENT} \
    --steps 100000 --minutes "$AE_MIN" --batch 64 --no-progress > "$DIR/ae.log" 2>&1 || { log "autoencoder failed"; tail -n 5 "$DIR/ae.log" | tee -a "$DIR/summary.log"; return 1; }
  grep -i "psnr" "$DIR/ae.log" | tail -n 2 | tee -a "$DIR/summary.log"
  log "teacher ($TEACHER_MIN min)"
  python3 -m worldsim train teacher --preset "$PRESET" --data "$DIR/data" --autoencoder "$DIR/ae/autoencoder.pt" \
    --device cuda --out "$DIR/teacher" --steps 100000 --minutes "$TEACHER_MIN" --batch 64 --clip-frames 32 \
    --context-aug-prob 0.3 --context-offset 0.3 --own-prob 0.25 --ckpt-every 500 --no-progress \
    ${TEACHER_FLAGS:---compile --attention flex} > "$DIR/teacher.log" 2>&1 || { log "teacher failed"; tail -n 5 "$DIR/teacher.log" | tee -a "$DIR/summary.log"; return 1; }
  grep "ema val loss" "$DIR/teacher.log" | tail -n 2 | tee -a "$DIR/summary.log"
  log "export"
  python3 -m worldsim train export "$DIR/teacher/teacher.pt" "$DIR/export/$NAME.safetensors" --int8 \
    > "$DIR/export.log" 2>&1 || { log "export failed"; tail -n 5 "$DIR/export.log" | tee -a "$DIR/summary.log"; return 1; }
  log "eval on the held-out clips"
  python3 -m worldsim eval --checkpoint "$DIR/export/$NAME.safetensors" --data "$DIR/data" --device cuda \
    --json "$DIR/eval.json" --out "$DIR/eval" > "$DIR/eval.log" 2>&1 || log "eval failed"
  tail -n 25 "$DIR/eval.log" | tee -a "$DIR/summary.log"
  log "done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
}

case "${1:-}" in
  all)
    setsid nohup bash -c "$(declare -f log pipeline); DIR='$DIR' ENV='$ENV' NAME='$NAME' CLIPS=$CLIPS FRAMES=$FRAMES \
      SIZE=$SIZE WORKERS=$WORKERS PRESET=$PRESET LATENT='$LATENT' AE_MIN=$AE_MIN TEACHER_MIN=$TEACHER_MIN \
      TEACHER_FLAGS='${TEACHER_FLAGS:---compile --attention flex}' pipeline" > "$DIR/pipeline.log" 2>&1 < /dev/null &
    echo "started the $NAME pipeline (pid $!) in $DIR" | tee -a "$OUT/$NAME-start.log"
    ;;
  status)
    cp "$DIR/summary.log" "$OUT/$NAME-summary.log" 2>/dev/null
    tail -n 4 "$DIR/summary.log" "$DIR"/*.log 2>/dev/null | tail -n 40
    ;;
  collect-results)
    cp "$DIR/summary.log" "$OUT/$NAME-summary.log" 2>/dev/null
    cp "$DIR/export/$NAME.safetensors" "$DIR/export/$NAME.md" "$OUT/" 2>/dev/null
    cp "$DIR/eval.json" "$OUT/$NAME-eval.json" 2>/dev/null
    ls -la "$OUT"
    ;;
  *)
    sed -n 2,10p "$0"; exit 2 ;;
esac
