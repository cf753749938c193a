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
bash scripts/pack_runs.sh "$@"
ls -la "$OUT"
