#!/usr/bin/env bash
# Regenerate every README result that depends on the shipped default model, in one go, after a new
# default is shipped (scripts/ship_weights.py). Run it on a quiet machine: pause background training
# first (kill -STOP every `dgno train` process, kill -CONT after), since the bench reports CPU time.
#   bash scripts/refresh_results.sh [STEP ...]    steps: bench demo gallery screenshots finetune tiling
# Prints what each step wrote and how long it took; the README's prose is then updated by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DGNO=${DGNO:-.venv/bin/dgno}
REAL=${REAL:-../shared/real}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(bench demo gallery screenshots finetune tiling)
for step in "${steps[@]}"; do
  start=$(date +%s)
  case $step in
    bench)  # the results table (test set reports only; classical settings tuned on validation)
      "$DGNO" bench --baseline-dir training/equal-steps --out benchmarks/results --threads 1 --real "$REAL" \
        --models nafnet-20k=training/nafnet-20k/nafnet-20k.safetensors
      "$PY" scripts/readme_bench.py ;;
    demo)  # "Start here": the gain on the shipped sample, and docs/demo_before_after.png
      OMP_NUM_THREADS=1 "$DGNO" demo --device cpu --out "${TMPDIR:-/tmp}/dgno-demo"
      cp "${TMPDIR:-/tmp}/dgno-demo/before_after.png" docs/demo_before_after.png ;;
    gallery)  # docs/images/real_gallery.png (real BBBC006 fields; never used to select anything)
      "$PY" scripts/real_gallery.py --real "$REAL" ;;
    screenshots)  # docs/screenshots/*.png from a real napari window under Xvfb
      make screenshots ;;
    finetune)  # the worked fine-tuning example's table (finetune-example/results.md)
      OMP_NUM_THREADS=2 "$PY" scripts/finetune_example.py --out finetune-example ;;
    tiling)  # whole vs tiled output of the shipped default (README, Python section)
      "$PY" scripts/tiling_agreement.py ;;
    *) echo "unknown step '$step' (bench demo gallery screenshots finetune tiling)" >&2; exit 2 ;;
  esac
  echo "== $step done in $(( $(date +%s) - start )) s"
done
