"""Cost of candidate model sizes, for sizing the default (issue 10): the `small` preset at other widths.

    python scripts/size_candidates.py [--widths 12,16,20,24] [--out benchmarks/sizing]

For each width: parameters, GMACs per 256², and, measured the way `dgno bench --speed` measures them
(a fresh process each, 2 threads), Mpx/s at 2048² with automatic tiles and seconds per training
step (batch 16 at 128²). Speed does not depend on the weights' values, so the candidates are
untrained; what a size is worth in quality comes from training them (configs/sizing/) and reading
their validation logs, never the test set. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from napari_dgno.bench.speed import _child
from napari_dgno.io.checkpoint import save_checkpoint
from napari_dgno.model import build_model, count_parameters, preset_config
from napari_dgno.model.complexity import count_gmacs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="12,16,20,24")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in (int(w) for w in args.widths.split(",")):
            config = preset_config("small", width=width)
            net = build_model("dgno", config)
            stem = Path(tmp) / f"small-w{width}"
            save_checkpoint(stem, net, {"name": stem.name, "preset": "small"})
            row = {
                "width": width,
                "parameters": count_parameters(net),
                "gmacs_256": round(count_gmacs(net, 256), 3),
                "mpx_s_2048_auto": 2048 * 2048 / _child("net", str(stem), 2048, "auto")["seconds"] / 1e6,
                "train_step_s": _child("net", str(stem), 128, "train")["seconds"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| width | parameters | GMACs / 256² | 2048² auto (Mpx/s) | train step (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['width']} | {r['parameters']:,} | {r['gmacs_256']:.2f} | "
            f"{r['mpx_s_2048_auto']:.2f} | {r['train_step_s']:.2f} |"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sizes.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
