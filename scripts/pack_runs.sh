#!/usr/bin/env bash
# Pack each run of the given configs into $OUT/NAME.tar: its logs, and its model if it finished, else
# its newest checkpoint, to resume from later (dgno train --config CONFIG --output-dir DIR, after
# unpacking its RUN_DIR/NAME folder into DIR). One tar a run: the device machine returns at most 8 files
# of 16 MiB. RUN_DIR (default runs) holds the run folders; progress logs are runs/CONFIG.log.
# Usage (in the folder holding runs/): [RUN_DIR=training/equal-steps] bash scripts/pack_runs.sh config1.yaml ...
set -u
dir=${RUN_DIR:-runs}
for cfg in "$@"; do
  run=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$cfg")
  latest=$(ls "$dir/$run"/step-*.json 2>/dev/null | sort | tail -n 1 | sed 's/\.json$//')
  tar -cf "$OUT/$run.tar" $(ls "runs/$(basename "$cfg" .yaml).log" "$dir/$run"/train.log \
    "$dir/$run/$run".safetensors "$dir/$run/$run".json ${latest:+"$latest".*} 2>/dev/null)
done
