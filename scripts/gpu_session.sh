#!/usr/bin/env bash
# Everything one lent GPU session does, in one call (the device's 15 minutes are for all tries):
# the CUDA checks, then v3 and the seven equal-step runs, each continued from its committed checkpoint,
# side by side for SECONDS, each brought back as one tar in $OUT (8 files: the device returns at most
# 8). Usage on the device machine: bash scripts/gpu_session.sh 480
# Every run keeps float32 (amp=false: what the CPU trains in, so a run continued on either machine
# keeps one recipe; data, not the GPU, is the limit) and v3 draws step k's batch
# from (seed, k) as on the CPU, so it continues the same run; its progress log comes back as
# runs/dgno-small-face-v3.log, to be appended to training/dgno-small-face-v3/train.log.
set -u
limit=$1
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
mkdir -p runs
timeout 120 python3 scripts/gpu_check.py 2>&1 | tail -n 12
cores=$(nproc)
v3_workers=$(( cores * 3 / 8 ))  # v3 has the most steps left
each=$(( (cores - v3_workers) / 7 )); [ "$each" -lt 1 ] && each=1
timeout "$limit" python3 scripts/train_run.py configs/dgno-small-face-v3.yaml output_dir=training \
  amp=false data_workers=$v3_workers > runs/dgno-small-face-v3.log 2>&1 &
for cfg in configs/equal-steps/*.yaml; do
  name=$(basename "$cfg" .yaml)
  timeout "$limit" python3 scripts/train_run.py "$cfg" output_dir=training/equal-steps amp=false \
    data_workers=$each > "runs/$name.log" 2>&1 &
done
wait
for log in runs/*.log; do echo "== $log"; grep -E "val PSNR|Error" "$log" | tail -2; tail -n 1 "$log"; done
latest=$(ls training/dgno-small-face-v3/step-*.json | sort | tail -n 1 | sed 's/\.json$//')
model=  # the exported model only if this run finished (a timeout kills it before any export)
grep -qx "training/dgno-small-face-v3/dgno-small-face-v3" runs/dgno-small-face-v3.log \
  && model=$(ls training/dgno-small-face-v3/dgno-small-face-v3.*)
# shellcheck disable=SC2086  # $model is a list of files
tar -cf "$OUT/dgno-small-face-v3.tar" runs/dgno-small-face-v3.log "$latest".* $model
RUN_DIR=training/equal-steps bash scripts/pack_runs.sh configs/equal-steps/*.yaml
ls -la "$OUT"
