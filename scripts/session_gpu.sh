#!/usr/bin/env bash
# One lent GPU machine's session of training, started in one call and gathered in one call:
#
#   OUT=/tmp/o scripts/session_gpu.sh start    # the background runs below (wheels in .whl installed first)
#   OUT=/tmp/o scripts/session_gpu.sh status   # one line per run
#   OUT=/tmp/o scripts/session_gpu.sh wait     # until the runs and EVAL_AFTER's evals end (at most $WAIT_S s, 540)
#   OUT=/tmp/o scripts/session_gpu.sh stop     # SIGINT to the runs (they save), wait for them (never pkill
#                                              # from the caller's command line: it matches itself)
#   OUT=/tmp/o scripts/session_gpu.sh bundle   # exports + compact states + one JSON of every log (+ the full
#                                              # evals' plots while there is room): <= 8 files
#
# Runs ($JOBS, default "game sf"; three at once ran each at ~1/3 of its speed alone: the tiny teacher
# 120-140 clips/s beside two others, 385 alone, on an H200):
#   game   an own game's pipeline (own_game_gpu.sh, $ENV: autoencoder variants side by side, the one that
#          keeps what moves, or the carried $GAME_AE; then the teacher with --motion-share (continuing the
#          carried compact state $GAME_TEACHER_RESUME), and with
#          $GAME_STUDENT_MIN > 0 a 1-step student of it);
#   sf     streamed self-forcing of the 1-step tiny student at context noise $SF_NOISE (0.1), regression
#          weighed by depth (--regression-horizon $SF_HORIZON, 32), lr $SF_LR (1e-5), idle rollouts
#          $SF_IDLE (0.15) of $SF_IDLE_FRAMES frames (256) with DMD weight $SF_IDLE_DMD (1) on them, frame
#          statistics weight $SF_STATS (0: off), hold weight $SF_HOLD (0: off; frames made with no key held
#          to the frame before), from $SF_TEACHER (tiny), continuing the student in $SF_INIT
#          when carried;
#   sf2    a second student beside it (and sf3 a third), a recipe change apart: $SF2_HORIZON, $SF2_LR,
#   sf3    $SF2_NOISE, $SF2_IDLE, $SF2_IDLE_DMD, $SF2_IDLE_FRAMES, $SF2_STATS, $SF2_HOLD, $SF2_INIT (SF3_...; each defaults to the
#          sf run's), in $RUN/sf2 ($RUN/sf3);
#   tinyr  the tiny teacher on the context recipe (teacher_gpu.sh recipe, $TEACHER_MIN minutes (20), from
#          $TEACHER_INIT (tiny) with $TEACHER_FLAGS, e.g. --prev-frame; resumed from $RESUME/tinyr); `bundle`
#          exports it (8-bit) and gives it the quick eval and the player tests beside the shipped tiny;
#   eval   the full eval (64 sequences, horizons to 512, 2,000 idle frames, 18,000 frames) of
#          $EVAL_CHECKPOINT (tiny-student) into $RUN/eval/full-eval.json (bundle packs it);
# EVAL_AFTER="sf sf2": when each of those runs ends, its student is exported and gets the full eval, one
# after another (~7.5 min each beside a student run; two at once did not finish in 510 s), into
# $RUN/eval/full-eval-<run>.json, and then scripts/player_tests.py sets them beside the shipped
# tiny-student (standing still, walking away and back, turning in circles: $RUN/eval/player_tests.png):
# a session trains and scores in one machine's time.
# A lent machine goes back when no call is in flight for ~30 s: poll with calls that sleep, back to back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for what comes back}
RUN=${RUN:-/tmp/wsrun}
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1 RUN
if [ -d .whl ] && [ -z "${PYTHONPATH:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

case "${1:-}" in
  start)
    jobs=" ${JOBS:-game sf} "
    for name in ${EVAL_AFTER:-}; do  # refused before anything starts
      case $name in sf|sf2|sf3) [[ $jobs == *" $name "* ]] && continue ;; esac
      echo "EVAL_AFTER: $name is not a student run of JOBS=\"${JOBS:-}\" (sf, sf2, sf3)" | tee -a "$OUT/start.log"
      exit 2
    done
    # GPU memory each run takes (measured on the H200: a streamed student at batch 16 with its critic's rows
    # merged ~44 GiB, the tiny teacher ~12, the full eval and an own game's pipeline less than 12): three
    # students and the teacher asked 144 of 140 GiB and every student died of OOM at its first step; two
    # students and the teacher ran, nvidia-smi reading 141,596 of 143,771 MiB used (the allocators keep what they free).
    need=0
    for j in $jobs; do case $j in sf|sf2|sf3) need=$((need + 44)) ;; *) need=$((need + 12)) ;; esac; done
    have=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
    if [ -n "$have" ] && [ "$need" -gt $((have / 1024 - 4)) ]; then
      echo "JOBS=\"${JOBS:-}\" need ~$need GiB of the GPU's $((have / 1024)): drop a run (each student ~44 GiB)" | tee -a "$OUT/start.log"
      exit 2
    fi
    if [[ $jobs == *" tinyr "* ]]; then OUT=$OUT MIN=${TEACHER_MIN:-20} scripts/teacher_gpu.sh recipe; fi
    if [[ $jobs == *" game "* ]]; then
      OUT=$OUT ENV=${ENV:-ALE/Breakout-v5} NAME=${NAME:-breakout} AE_MIN=${AE_MIN:-4} TEACHER_MIN=${GAME_MIN:-13} \
        AE=${GAME_AE:-} STUDENT_MIN=${GAME_STUDENT_MIN:-0} TEACHER_RESUME=${GAME_TEACHER_RESUME:-} \
        STUDENT_INIT=${GAME_STUDENT_INIT:-} scripts/own_game_gpu.sh all
    fi
    if [[ $jobs == *" eval "* ]]; then
      mkdir -p "$RUN/eval"
      setsid nohup python3 -m worldsim eval --checkpoint "${EVAL_CHECKPOINT:-tiny-student}" --device cuda \
        --json "$RUN/eval/full-eval.json" --out "$RUN/eval-full" > "$RUN/eval.log" 2>&1 < /dev/null &
      echo "started eval of ${EVAL_CHECKPOINT:-tiny-student} (pid $!)" | tee -a "$OUT/start.log"
    fi
    start_sf() {  # name, init file, horizon, lr, context noise, idle fraction, DMD weight on idle, idle frames,
                  # frame statistics weight, hold weight
      local init=(); [ -n "$2" ] && [ -f "$2" ] && init=(--init "$2")
      setsid nohup python3 -m worldsim train self-forcing --teacher "${SF_TEACHER:-tiny}" "${init[@]}" --device cuda \
        --out "$RUN/$1" --minutes "${SF_MIN:-20}" --steps 100000 --batch 16 --steps-per-frame 1 \
        --context-noise "$5" --regression-horizon "$3" --lr "$4" --idle-fraction "$6" \
        --idle-dmd "$7" --idle-rollout-frames "$8" --stats-weight "$9" --hold-weight "${10}" --ckpt-every 200 --no-progress \
        > "$RUN/$1.log" 2>&1 < /dev/null &
      echo "started $1 (pid $!) ${init[*]} horizon $3 lr $4 context noise $5 idle $6 (DMD $7, $8 frames) stats $9 hold ${10}" | tee -a "$OUT/start.log"
    }
    var() {  # var PREFIX NAME DEFAULT: $PREFIX_NAME, else $SF_NAME, else DEFAULT
      local a="${1}_$2" b="SF_$2"; echo "${!a:-${!b:-$3}}"
    }
    declare -A pid_of
    for name in sf sf2 sf3; do
      [[ $jobs == *" $name "* ]] || continue
      P=${name^^}
      start_sf "$name" "$(var "$P" INIT "")" "$(var "$P" HORIZON 32)" "$(var "$P" LR 1e-5)" "$(var "$P" NOISE 0.1)" \
        "$(var "$P" IDLE 0.15)" "$(var "$P" IDLE_DMD 1)" "$(var "$P" IDLE_FRAMES 256)" "$(var "$P" STATS 0)" \
        "$(var "$P" HOLD 0)"
      pid_of[$name]=$!
    done
    after=()
    for name in ${EVAL_AFTER:-}; do after+=("$name" "${pid_of[$name]}"); done
    if [ ${#after[@]} -gt 0 ]; then
      mkdir -p "$RUN/eval" "$RUN/export"
      # one waiter, so the evals run one after another; each waits for its own run to end (it saves first)
      setsid nohup bash -c 'while [ $# -gt 0 ]; do name=$1 pid=$2; shift 2
          while kill -0 "$pid" 2> /dev/null; do sleep 5; done
          python3 -m worldsim.train.sf_state "$RUN/$name/self_forcing.pt" "$RUN/export/$name-stream.safetensors" || continue
          python3 -m worldsim eval --checkpoint "$RUN/export/$name-stream.safetensors" --device cuda \
            --json "$RUN/eval/full-eval-$name.json" --out "$RUN/eval-$name"
        done
        # then every student exported so far beside the shipped one, as a player tries them (one image)
        ls "$RUN"/export/*-stream.safetensors > /dev/null 2>&1 && python3 scripts/player_tests.py tiny-student \
          "$RUN"/export/*-stream.safetensors --device cuda --out "$RUN/eval"' evals "${after[@]}" > "$RUN/eval-after.log" 2>&1 < /dev/null &
      echo $! > "$RUN/eval-after.pid"  # `wait` waits for it too (between its evals no eval process runs)
      echo "the full eval of ${EVAL_AFTER} when each run ends (pid $!)" | tee -a "$OUT/start.log"
    fi
    ;;
  status)
    for f in "$RUN"/tinyr.log "$RUN"/sf.log "$RUN"/sf2.log "$RUN"/sf3.log "$RUN"/eval.log "$RUN"/eval-after.log "$RUN"/${NAME:-breakout}/summary.log; do
      [ -f "$f" ] || continue
      echo "== $f: $(grep -h "INFO\|^\[" "$f" 2>/dev/null | tail -n 1 | cut -c1-200)"
      # a run that raised: its error line, so a dead run is seen at the first poll
      grep -h "^[A-Za-z_.]*Error\|^Traceback" "$f" | tail -n 1 | cut -c1-200 | sed 's/^/   FAILED: /'
    done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    ;;
  wait)
    # the runs' own processes (this script's command line does not hold the pattern, so pgrep never
    # finds itself or the shell that called it)
    end=$((SECONDS + ${WAIT_S:-540}))
    busy() {
      pgrep -f "python3 -m worldsim (train|eval)" > /dev/null && return 0
      [ -f "$RUN/eval-after.pid" ] && kill -0 "$(cat "$RUN/eval-after.pid")" 2> /dev/null
    }
    while busy && [ "$SECONDS" -lt "$end" ]; do sleep 5; done
    pgrep -af "python3 -m worldsim (train|eval)" | cut -c1-160 || echo "no run left"
    ;;
  stop)
    # ask the runs to save and end (SIGINT: the step finishes, the state is written), then wait for them;
    # the pattern lives here: a caller's command line holding it would be matched and stopped too
    [ -f "$RUN/eval-after.pid" ] && kill "$(cat "$RUN/eval-after.pid")" 2> /dev/null  # no further eval starts
    pkill -INT -f "python3 -m worldsim (train|eval)"
    end=$((SECONDS + ${WAIT_S:-90}))
    while pgrep -f "python3 -m worldsim (train|eval)" > /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 2; done
    pgrep -af "python3 -m worldsim (train|eval)" | cut -c1-160 || echo "no run left"
    ;;
  bundle)
    name=${NAME:-breakout}
    mkdir -p "$RUN/export" "$RUN/eval"
    if [ -f "$RUN/tinyr/teacher.pt" ] && python3 -m worldsim train export "$RUN/tinyr/teacher.pt" \
      "$RUN/export/tinyr.safetensors" --int8 > "$RUN/export-tinyr.log" 2>&1; then
      cp "$RUN/export/tinyr.safetensors" "$OUT/"
      python3 -m worldsim eval --checkpoint "$RUN/export/tinyr.safetensors" --quick --device cuda \
        --json "$RUN/eval/quick-tinyr.json" --out "$RUN/eval-quick-tinyr" > "$RUN/eval-tinyr.log" 2>&1
      python3 scripts/player_tests.py tiny "$RUN/export/tinyr.safetensors" --device cuda \
        --out "$RUN/eval-teacher" >> "$RUN/eval-tinyr.log" 2>&1 && cp "$RUN/eval-teacher/player_tests.png" "$OUT/teacher_player_tests.png"
      cp "$RUN/eval-teacher/player_tests.json" "$RUN/eval/teacher_player_tests.json" 2>/dev/null
    fi
    cp "$RUN"/tinyr/teacher.state*.safetensors "$OUT/" 2>/dev/null
    for sf in sf sf2 sf3; do
      state=$RUN/$sf/self_forcing.pt done=$RUN/export/$sf-stream.safetensors
      [ -f "$state" ] || continue
      if [ "$done" -nt "$state" ]; then  # EVAL_AFTER exported this state already (its card: $RUN/export)
        cp "$done" "$OUT/"
      else
        python3 -m worldsim.train.sf_state "$state" "$OUT/$sf-stream.safetensors" > "$RUN/export-$sf.log" 2>&1
      fi
    done
    cp "$RUN/$name/export/$name.safetensors" "$RUN/$name/export/$name-student.safetensors" "$OUT/" 2>/dev/null
    for f in "$RUN/$name"/teacher/teacher.state*.safetensors; do [ -f "$f" ] && cp "$f" "$OUT/$name.${f##*/teacher.}"; done
    # the start logs, the students' cards and the eval JSONs travel inside texts.json: files, not names,
    # are counted (8 at most)
    python3 scripts/pack_texts.py "$OUT/texts.json" "$RUN"/*.log "$RUN"/*/metrics.jsonl "$RUN"/*/summary.log \
      "$RUN"/*/eval.json "$RUN"/*/student-eval.json "$RUN"/*/*.log "$RUN"/*/export/*.md "$RUN"/*/*/metrics.jsonl "$RUN"/*/ae-*/autoencoder.json "$RUN"/export/*.md "$RUN/$name/export/$name.md" "$RUN"/sweep_*.json \
      "$RUN"/eval/*.json "$OUT"/*.log "$OUT"/*.md && rm -f "$OUT"/*.log "$OUT"/*.md
    # the player tests' image, then the full evals' plots, while the files stay within the 8 that come
    # back (the models come first)
    [ -f "$RUN/eval/player_tests.png" ] && cp "$RUN/eval/player_tests.png" "$OUT/"
    for png in "$RUN"/eval-*/psnr_vs_horizon.png "$RUN"/eval-*/long_run.png; do
      [ -f "$png" ] && [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -lt 8 ] || continue
      d=${png%/*}; cp "$png" "$OUT/${d##*/eval-}-${png##*/}"
    done
    ls -la "$OUT"
    ;;
  *)
    sed -n '2,/^# Runs/p' "$0" | sed '$d'; exit 2 ;;
esac
