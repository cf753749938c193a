"""Validation PSNR of several training runs side by side, step by step, from their checkpoints' records.

Why: the equal-step comparison (issue 10) is decided on validation, and each run's curve is already in
its newest checkpoint's JSON (``training.history``), so this reads, it does not re-evaluate. Runs
that share a config's data, schedule and seed have the same validation pairs, so a row compares
like with like. (Scoring final models on the same pairs, with paired standard errors, is
``scripts/compare_on_validation.py``.)

    python scripts/validation_curves.py training/equal-steps/equal-*/ [--every 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_dgno.train.state import checkpoints


def run_history(run_dir: Path) -> tuple[str, list[dict]]:
    """(name, history) from the run's exported model if it finished, else its newest checkpoint."""
    run_dir = Path(run_dir)
    exported = run_dir / f"{run_dir.name}.json"
    newest = checkpoints(run_dir)
    # The newest checkpoint can be ahead of an export left from an earlier, stopped session.
    candidates = [
        p for p in (exported, newest[0][1].with_suffix(".json") if newest else None) if p and p.exists()
    ]
    if not candidates:
        raise SystemExit(f"{run_dir}: no checkpoint or exported model (step-*.json, {exported.name})")
    meta = max((json.loads(p.read_text()) for p in candidates), key=lambda m: m["training"]["steps"])
    return meta.get("name", run_dir.name), meta["training"]["history"]


def curves_table(runs: dict[str, list[dict]], every: int = 0) -> str:
    """Markdown: one row per validated step (multiples of ``every`` if given), one column per run."""
    steps = sorted({h["step"] for history in runs.values() for h in history if h.get("val")})
    if every:
        steps = [s for s in steps if s % every == 0]
    psnr = {
        name: {h["step"]: h["val"]["psnr"] for h in history if h.get("val")} for name, history in runs.items()
    }
    lines = ["| step | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for step in steps:
        cells = (f"{psnr[n][step]:.2f}" if step in psnr[n] else "–" for n in runs)
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    inputs = [h.get("input", {}).get("psnr") for history in runs.values() for h in history[:1]]
    if inputs and all(i is not None for i in inputs) and len({round(i, 4) for i in inputs}) == 1:
        lines.append(f"\nValidation PSNR (dB, EMA weights); the blurred input scores {inputs[0]:.2f} dB.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with step-*.json or NAME.json)")
    p.add_argument("--every", type=int, default=0, help="only steps that are multiples of this")
    args = p.parse_args(argv)
    runs = dict(run_history(r) for r in args.runs)
    print(curves_table(runs, args.every))


if __name__ == "__main__":
    main()
