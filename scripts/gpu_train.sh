#!/usr/bin/env bash
# Train several configs at once on one GPU machine; pack each run's model or newest checkpoint into $OUT.
# Usage (on the device machine): bash scripts/gpu_train.sh SECONDS config1.yaml config2.yaml ...
set -u
limit=$1; shift
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
mkdir -p runs
# The GPU trains far faster than one core simulates batches: share the cores out as data workers
# (train/workers.py); each run's own process mostly waits on the GPU.
workers=${DATA_WORKERS:-$(( $(nproc) / $# ))}
[ "$workers" -lt 1 ] && workers=1
for cfg in "$@"; do
  name=$(basename "$cfg" .yaml)
  timeout "$limit" python3 scripts/train_run.py "$cfg" data_workers=$workers > "runs/$name.log" 2>&1 &
done
wait
for cfg in "$@"; do name=$(basename "$cfg" .yaml); grep -E "val|Error|error" "runs/$name.log" | tail -3; tail -n 2 "runs/$name.log"; done
# One tar a run ($OUT returns at most 8 files of 16 MiB): its logs, and its model if it finished,
# else its newest checkpoint, to resume from later (dgno train --config ... --output-dir runs).
for cfg in "$@"; do
  run=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$cfg")
  latest=$(ls runs/"$run"/step-*.json 2>/dev/null | sort | tail -n 1 | sed 's/\.json$//')
  tar -cf "$OUT/$run.tar" "runs/$(basename "$cfg" .yaml).log" $(ls runs/"$run"/train.log \
    runs/"$run"/"$run".safetensors runs/"$run"/"$run".json ${latest:+"$latest".*} 2>/dev/null)
done
ls -la "$OUT"
