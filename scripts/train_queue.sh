#!/usr/bin/env bash
# Train configs one after another, each resuming from its newest checkpoint, so that one command at
# the start of every session carries the whole queue forward.
# Usage: nohup bash scripts/train_queue.sh OUTPUT_DIR=CONFIG [OUTPUT_DIR=CONFIG ...] > queue.log 2>&1 &
#   e.g. training=configs/dgno-small-face-v3.yaml training/equal-steps=configs/equal-steps/nafnet.yaml
# A finished run resumes at its last step and only re-exports its model, so finished entries cost
# seconds. SIGTERM stops the current run cleanly (it keeps its last step) and ends the queue.
# THREADS (default 2) and TRAIN_ARGS (extra `dgno train` flags) come from the environment.
set -u
stop=0
child=
trap 'stop=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
for entry in "$@"; do
  [ "$stop" = 1 ] && break
  out=${entry%%=*}; cfg=${entry#*=}
  echo "$(date -u +%FT%TZ) start $cfg -> $out"
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
  dgno train --config "$cfg" --output-dir "$out" --threads "${THREADS:-2}" -q ${TRAIN_ARGS:-} &
  child=$!
  wait "$child"; code=$?
  # A trapped signal ends `wait` early: wait again until the run has written its checkpoint.
  while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
  echo "$(date -u +%FT%TZ) end $cfg (exit $code)"
  [ "$code" != 0 ] && break
done
exit 0
