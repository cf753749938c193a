#!/usr/bin/env bash
# Everything one lent GPU session does, in one call (the device's 15 minutes are for all tries):
# the CUDA checks, then the unfinished equal-step runs (or the CONFIGs given), each continued from its
# committed checkpoint in training/equal-steps (the CPU lanes' progress is not lost), side by side for
# SECONDS, each brought back as one tar in $OUT (at most 7: the device returns at most 8 files).
# Usage on the device machine:
#   bash scripts/gpu_session.sh 480 [CONFIG ...]
#   OUT_DIR=training bash scripts/gpu_session.sh 480 configs/nafnet-20k.yaml   # a run outside equal-steps
# Every run keeps float32 (amp=false: what the CPU trains in, so a run continued on either machine
# keeps one recipe; data, not the GPU, is the limit) and draws step k's batch from (seed, k) as on the
# CPU, so it continues the same run. Each tar holds runs/NAME.log, to be appended to the run's train.log.
set -u
limit=$1
out_dir=${OUT_DIR:-training/equal-steps}
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
mkdir -p runs
timeout 120 python3 scripts/gpu_check.py 2>&1 | tail -n 12
configs=("${@:2}")
if [ ${#configs[@]} -eq 0 ]; then
  # A finished run has training/equal-steps/NAME/NAME.json, or shipped (its record names the run).
  for cfg in configs/equal-steps/*.yaml; do
    name=$(sed -n 's/^name: *//p' "$cfg")
    [ -f "training/equal-steps/$name/$name.json" ] && continue
    grep -qs "\"name\": \"$name\"" src/napari_dgno/weights/*.json && continue
    configs+=("$cfg")
  done
fi
[ ${#configs[@]} -eq 0 ] && { echo "no unfinished equal-step run"; exit 0; }
each=$(( $(nproc) / ${#configs[@]} )); [ "$each" -lt 1 ] && each=1
for cfg in "${configs[@]}"; do
  name=$(basename "$cfg" .yaml)
  timeout "$limit" python3 scripts/train_run.py "$cfg" output_dir="$out_dir" amp=false \
    data_workers=$each > "runs/$name.log" 2>&1 &
done
wait
for log in runs/*.log; do echo "== $log"; grep -E "val PSNR|Error" "$log" | tail -2; tail -n 1 "$log"; done
RUN_DIR=$out_dir bash scripts/pack_runs.sh "${configs[@]}"
ls -la "$OUT"
