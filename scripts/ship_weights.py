"""Copy a trained run into src/napari_dgno/weights/ under its shipped name, with its whole lineage.

A model made in stages (e.g. configs/dgno-small-face-v2.yaml, then configs/dgno-small-face-v3.yaml
from its result) ships one JSON whose ``training`` is the last stage's record and whose
``training.base_training`` is the record of the stage it started from (and so on back), and one
``*.train.log`` with every stage's log in order. Nothing is retrained or recomputed here.

    python scripts/ship_weights.py training/dgno-small-face-v3/dgno-small-face-v3 --name dgno-small-face \
        --log training/dgno-small-face-v3/train.log \
        --base-log src/napari_dgno/weights/dgno-small-face.train.log
"""

import argparse
import json
import shutil
from pathlib import Path

from napari_dgno.io.atomic import atomic_file
from napari_dgno.io.checkpoint import checkpoint_paths, load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_dgno" / "weights"


def lineage(meta: dict) -> dict:
    """The run's training record with its base checkpoint's record nested as ``base_training``.

    ``dgno train`` records it itself (since stop 22), from the base as it was when the run started;
    that record is kept, since the base file may since have been replaced or removed. Older runs'
    records are completed from the base checkpoint's JSON."""
    training = dict(meta["training"])
    base = training.get("base_checkpoint")
    if base and "base_training" not in training:
        _, base_json = checkpoint_paths(base)
        training["base_training"] = lineage(json.loads(Path(base_json).read_text()))
    return training


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="checkpoint stem or path of the final stage")
    p.add_argument("--name", required=True, help="shipped model name")
    p.add_argument("--log", type=Path, action="append", default=[], help="this stage's train.log")
    p.add_argument("--base-log", type=Path, action="append", default=[], help="earlier stages' logs")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="where shipped models live")
    args = p.parse_args()

    load_checkpoint(args.run)  # refuses a damaged or mismatched checkpoint before anything is copied
    weights, meta_path = checkpoint_paths(args.run)
    meta = json.loads(Path(meta_path).read_text())
    meta["name"] = args.name
    meta["weights"] = {**meta["weights"], "file": f"{args.name}.safetensors"}  # same bytes, same SHA-256
    meta["training"] = lineage(meta)
    logs = [*args.base_log, *args.log]
    # Read everything before writing anything: a shipped model is replaced whole or not at all.
    log_text = "".join(f"# ---- {log} ----\n{log.read_text()}" for log in logs)
    with atomic_file(args.weights_dir / f"{args.name}.safetensors") as f:
        with open(weights, "rb") as src:
            shutil.copyfileobj(src, f)
    with atomic_file(args.weights_dir / f"{args.name}.json") as f:
        f.write((json.dumps(meta, indent=2) + "\n").encode())
    if logs:
        with atomic_file(args.weights_dir / f"{args.name}.train.log") as f:
            f.write(log_text.encode())
    print(f"shipped {args.name}: {args.weights_dir / args.name}.{{safetensors,json,train.log}}")


if __name__ == "__main__":
    main()
