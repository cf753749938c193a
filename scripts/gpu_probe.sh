#!/usr/bin/env bash
# Time training steps on a GPU machine (used to size the GPU training budget; see README).
set -u
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, safetensors, skimage, tifffile, yaml; print('torch', torch.__version__)"
for bs in 8 16; do
  timeout 120 python3 scripts/train_run.py configs/dgno-small-face-v2.yaml steps=60 name=probe-$bs batch_size=$bs \
    output_dir=/tmp/runs threads=4 val_every=1000 checkpoint_every=1000 | tail -4
done
