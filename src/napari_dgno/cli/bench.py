"""``dgno bench``: quality on the frozen test set, or ``--scale`` / ``--speed``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _name_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated pixels like 8,16,32,64,0, got {text!r}"
        ) from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark DGNO, the baselines and classical deconvolution on a frozen test set",
        description=(
            "Score every method on the same frozen simulated test set (procedural specimens + "
            "cells3d's held-out lateral region, each under its own random microscope): PSNR / SSIM "
            "mean ± s.e. overall and per source, the paired difference to the default model, the "
            "grid ratio, parameters, GMACs and CPU time, and the PSNR gain by distance to a blur "
            "jump. Classical methods are tuned on the validation set only. Missing models are "
            "reported, not fatal."
        ),
    )
    p.add_argument("--quick", action="store_true", help="2 test images and a coarse tuning grid (CI)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write DIR/bench.md and DIR/bench.json")
    p.add_argument("--baseline-dir", type=Path, metavar="DIR", help="where the baseline checkpoints live")
    p.add_argument(
        "--train-baselines",
        action="store_true",
        help="train missing baselines (configs/equal-steps/*.yaml) first",
    )
    p.add_argument(
        "--models",
        nargs="+",
        type=_name_path,
        default=[],
        metavar="NAME=PATH",
        help="extra or replacement models (checkpoint paths or model names)",
    )
    p.add_argument(
        "--element-sweep",
        type=_sizes,
        default=None,
        metavar="PX,PX,...",
        help="element sizes for the sweep of the default model (default 8,16,32,64,0; '' for none)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads (default: $NAPARI_DGNO_THREADS, else torch's setting)",
    )
    p.add_argument(
        "--real",
        type=Path,
        metavar="DIR",
        help="also deblur the real TIFFs in DIR with the default model and report grid ratio, "
        "sharpness and background noise (no ground truth; never used to select anything)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    scale = p.add_argument_group(
        "scale (--scale)",
        "time and peak memory against image size (each size in a fresh process, streaming path) and "
        "against local cluster workers; writes DIR/scale.md and DIR/scale.json with --out",
    )
    scale.add_argument("--scale", action="store_true", help="run the scale benchmark instead")
    scale.add_argument("--sizes", type=_sizes, default=None, metavar="PX,PX,...",
                       help="image sides (default 512,1024,2048,4096,8192)")  # fmt: skip
    scale.add_argument("--worker-counts", type=_sizes, default=None, metavar="N,N,...",
                       help="local cluster sizes for the plate (default 1,2; '' for none)")  # fmt: skip
    scale.add_argument("--plate-images", type=int, default=8, metavar="N", help="plate images (default 8)")
    scale.add_argument("--plate-size", type=int, default=1024, metavar="PX", help="plate image side (1024)")
    scale.add_argument("--model", help="model name or checkpoint (default: shipped, else random-init)")
    scale.add_argument("--preset", default="small", help="preset of the random-init fallback (small)")
    scale.add_argument("--tile", default="auto", metavar="PX|auto", help="tile size (default auto)")
    scale.add_argument("--verify-max", type=int, default=2048, metavar="PX",
                       help="also run sizes up to this in memory and compare (default 2048)")  # fmt: skip
    scale.add_argument("--max-seconds", type=float, metavar="S",
                       help="skip sizes predicted to take longer, reporting the extrapolation")  # fmt: skip
    speed = p.add_argument_group(
        "speed (--speed)",
        "Mpx/s at 512² and 2048² (whole image and auto tiles), seconds per training step, peak RSS, "
        "threads, the fixed cost of one `dgno deblur` call and the slowdown with one core busy, for "
        "the shipped default (or --model), the NAFNet baseline (--baseline-dir) and RL-10; writes "
        "DIR/speed.md and DIR/speed.json with --out. Run it on a quiet machine.",
    )
    speed.add_argument("--speed", action="store_true", help="run the speed benchmark instead")
    p.set_defaults(func=run)


def run_speed_command(args, log) -> int:
    from napari_dgno.bench.models import find_baseline
    from napari_dgno.bench.speed import run_speed, to_markdown
    from napari_dgno.registry import default_model_name, locate_model

    name = args.model or default_model_name()
    models = {f"DGNO {name}": str(locate_model(name))}
    nafnet = find_baseline("equal-nafnet", args.baseline_dir) if args.baseline_dir else None
    if nafnet is not None:
        models["NAFNet baseline"] = str(nafnet)
    else:
        log("no NAFNet baseline (pass --baseline-dir training/equal-steps): its row is left out")
    report = run_speed(models, out=args.out, log=log)
    print(to_markdown(report), end="")
    return 0


def run_scale_command(args, log) -> int:
    from napari_dgno.bench.scale import SIZES, WORKER_COUNTS, run_scale, to_plain

    report = run_scale(
        sizes=args.sizes or SIZES,
        worker_counts=WORKER_COUNTS if args.worker_counts is None else args.worker_counts,
        plate_images=args.plate_images,
        plate_size=args.plate_size,
        model=args.model,
        preset=args.preset,
        tile=args.tile,
        threads=args.threads,
        verify_max=args.verify_max,
        max_seconds=args.max_seconds,
        out=args.out,
        log=log,
    )
    print(to_plain(report), end="")
    if args.out is not None:
        log(f"wrote {args.out / 'scale.md'} and {args.out / 'scale.json'}")
    return 0


def run(args) -> int:
    from napari_dgno.bench.models import default_models, train_baselines
    from napari_dgno.bench.run import ELEMENT_SWEEP, run_bench

    def log(message: str) -> None:
        if not args.quiet:
            print(f"dgno bench: {message}", file=sys.stderr, flush=True)

    if args.scale:
        return run_scale_command(args, log)
    if args.speed:
        return run_speed_command(args, log)
    if args.train_baselines:
        train_baselines(args.baseline_dir, log=log)
    models = {**default_models(args.baseline_dir), **dict(args.models)}
    report = run_bench(
        models,
        quick=args.quick,
        element_sweep=ELEMENT_SWEEP if args.element_sweep is None else args.element_sweep,
        out=args.out,
        baseline_dir=args.baseline_dir,
        threads=args.threads,
        real_dir=args.real,
        log=log,
    )
    print(report.plain(), end="")
    if args.out is not None:
        log(f"wrote {args.out / 'bench.md'} and {args.out / 'bench.json'}")
    return 0
