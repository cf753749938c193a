"""``dgno demo`` / ``make demo``: deblur the shipped sample with the default model and show the gain.

Writes ``restored.tif`` and a before / after / ground-truth PNG, and prints PSNR / SSIM of the blurred
input and of the restoration against the ground truth (range fixed from the ground truth, and the
paper's per-image min–max convention).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="deblur the shipped sample and report the gain",
        description="Deblur the shipped 'defocused nuclei' sample with the default model.",
    )
    p.add_argument("--out", type=Path, default=Path("dgno-demo"), help="output folder (default dgno-demo/)")
    p.add_argument("--model", help="model name or checkpoint path (default: the shipped default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def side_by_side(images: list[np.ndarray], reference: np.ndarray, gap: int = 8) -> np.ndarray:
    """uint8 panels on one display range (the reference's 0.5–99.9 percentiles), white gaps between."""
    lo, hi = np.percentile(reference, [0.5, 99.9])
    panels = [np.clip((im - lo) / max(hi - lo, 1e-6), 0, 1) for im in images]
    spacer = np.ones((reference.shape[0], gap))
    row = [p for panel in panels for p in (panel, spacer)][:-1]
    return (np.concatenate(row, axis=1) * 255).round().astype(np.uint8)


def run(args) -> int:
    import imageio.v3 as iio

    from ..inference import deblur, load_model
    from ..io import write_tiff_atomic
    from ..io.atomic import atomic_path
    from ..metrics import psnr_ssim
    from ..samples import load_defocused_nuclei

    sample = load_defocused_nuclei()
    blurred, sharp = sample["blurred"], sample["sharp"].astype(np.float32)
    model = load_model(args.model, device=args.device)
    started = time.perf_counter()
    restored = deblur(blurred, model, device=args.device)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    write_tiff_atomic(args.out / "restored.tif", restored)
    png = iio.imwrite(
        "<bytes>", side_by_side([blurred.astype(np.float32), restored, sharp], sharp), extension=".png"
    )
    with atomic_path(args.out / "before_after.png") as tmp:
        tmp.write_bytes(png)

    print(
        f"model {model.name}: {model.meta.get('preset')} preset, flux {model.flux}, "
        f"{model.element_size}-px elements; {blurred.shape[1]}x{blurred.shape[0]} px in {seconds:.1f} s"
    )
    print(f"{'':10}{'PSNR (gt range)':>17}{'SSIM':>8}{'PSNR (min-max)':>17}{'SSIM':>8}")
    for label, image in (("blurred", blurred), ("restored", restored)):
        p, s = psnr_ssim(image, sharp, "gt")
        pm, sm = psnr_ssim(image, sharp, "minmax")
        print(f"{label:10}{p:>14.2f} dB{s:>8.3f}{pm:>14.2f} dB{sm:>8.3f}")
    print(
        f"wrote {args.out / 'restored.tif'} and {args.out / 'before_after.png'} "
        "(blurred | restored | ground truth)",
        file=sys.stderr,
    )
    return 0
