#!/usr/bin/env bash
# Train several configs at once on one GPU machine; pack the exported models + logs into $OUT.
# Usage (on the device machine): bash scripts/gpu_train.sh SECONDS config1.yaml config2.yaml ...
set -u
limit=$1; shift
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
mkdir -p runs
# The GPU trains far faster than one core simulates batches: share the cores out as data workers
# (train/workers.py), one core per run left for its own process.
workers=${DATA_WORKERS:-$(( $(nproc) / $# - 1 ))}
[ "$workers" -lt 1 ] && workers=1
for cfg in "$@"; do
  name=$(basename "$cfg" .yaml)
  timeout "$limit" python3 scripts/train_run.py "$cfg" data_workers=$workers > "runs/$name.log" 2>&1 &
done
wait
for cfg in "$@"; do name=$(basename "$cfg" .yaml); grep -E "val|Error|error" "runs/$name.log" | tail -3; tail -n 2 "runs/$name.log"; done
tar -cf "$OUT/models.tar" runs/*.log $(ls runs/*/*.safetensors runs/*/*.json 2>/dev/null | grep -v '/step-')
ls -la "$OUT"
