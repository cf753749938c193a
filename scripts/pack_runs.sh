#!/usr/bin/env bash
# Pack each run of the given configs into $OUT/NAME.tar: its logs, and its model if it finished, else
# its newest checkpoint, to resume from later (dgno train --config CONFIG --output-dir DIR, after
# unpacking its runs/NAME folder into DIR). One tar a run: the device machine returns at most 8 files
# of 16 MiB. Usage (in the folder holding runs/): bash scripts/pack_runs.sh config1.yaml ...
set -u
for cfg in "$@"; do
  run=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$cfg")
  latest=$(ls runs/"$run"/step-*.json 2>/dev/null | sort | tail -n 1 | sed 's/\.json$//')
  tar -cf "$OUT/$run.tar" $(ls "runs/$(basename "$cfg" .yaml).log" runs/"$run"/train.log \
    runs/"$run"/"$run".safetensors runs/"$run"/"$run".json ${latest:+"$latest".*} 2>/dev/null)
done
