"""Worked example: does a short fine-tune make a microscope the shipped model was not trained for better?

Reproducible end to end (fixed seeds), through the same path a user takes (``dgno train --config …
--base dgno-small-face`` on a folder of TIFF pairs):

1. Pairs are simulated with optics the shipped model never saw: by default a 60x/1.4 oil objective
   (0.108 µm pixels, 520 nm) with strong primary spherical aberration (0.3 waves RMS, a wrong
   coverslip or a deep focus into water), defocus up to 2 µm. Training pairs come from the cells3d
   *training* slices, held-out test pairs from its *test* slices (other nuclei, never trained on).
   Blurred images are written as uint16 camera frames, sharp ones as float32 in the same units.
2. ``dgno train`` fine-tunes the base model on the training folder (≤ 200 steps of batch 8 at 128²;
   whole training images are held out for validation, as the fine-tune dock does; the test images
   are used for nothing but the final numbers).
3. The shipped and the fine-tuned model restore every held-out test image; PSNR (data range from the
   ground truth) is reported as mean ± standard error, with the paired gain.

    python scripts/finetune_example.py --out finetune-example            # the README's numbers
    python scripts/finetune_example.py --out /tmp/ft-smoke --smoke       # a 5-step check, ~15 s

Results go to ``OUT/results.json`` and ``OUT/results.md``; rerunning reuses the simulated pairs
(``--no-resume`` is passed to ``dgno train``: the run starts from the base model again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

import napari_dgno
from napari_dgno.data.clean_images import CELLS3D_PIXEL_UM, cells3d_region
from napari_dgno.data.varied import at_pixel_size
from napari_dgno.metrics import psnr_ssim
from napari_dgno.physics.depth import DepthConfig
from napari_dgno.physics.psf import Optics
from napari_dgno.physics.simulate import SimulationConfig, relative_intensity, simulate_batch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("finetune-example"))
    p.add_argument("--base", default="dgno-small-face", help="model to fine-tune (name or path)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--train-pairs", type=int, default=24)
    p.add_argument("--test-pairs", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for training and evaluation")
    p.add_argument("--device", default="auto")
    # the microscope the base model was not trained for
    p.add_argument("--na", type=float, default=1.4)
    p.add_argument("--n-medium", type=float, default=1.515)
    p.add_argument("--pixel-um", type=float, default=0.108)
    p.add_argument("--wavelength-um", type=float, default=0.52)
    p.add_argument("--spherical", type=float, default=0.3, help="primary spherical aberration, waves RMS")
    p.add_argument("--max-defocus-um", type=float, default=2.0)
    p.add_argument("--smoke", action="store_true", help="5 steps on a few small pairs: checks the path only")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.patch = 5, 2, 64
        args.train_pairs, args.test_pairs = 4, 2
    return args


def simulation(args) -> SimulationConfig:
    optics = Optics(
        na=args.na,
        n_medium=args.n_medium,
        pixel_um=args.pixel_um,
        wavelength_um=args.wavelength_um,
        spherical=args.spherical,
    )
    depth = DepthConfig(max_defocus_um=args.max_defocus_um, min_scale_um=min(1.0, args.max_defocus_um))
    return SimulationConfig(optics=optics, depth=depth)


def clean_slices(split: str, n: int, pixel_um: float) -> list[np.ndarray]:
    """``n`` distinct in-focus slices of one cells3d region (spread over its z range), resampled
    from 0.26 µm pixels to ``pixel_um``, in relative units."""
    region = cells3d_region(split)
    if n > len(region):
        raise SystemExit(f"the {split} region has {len(region)} slices; asked for {n}")
    return [
        at_pixel_size(relative_intensity(region[z].astype(np.float32)), CELLS3D_PIXEL_UM[-1], pixel_um)
        for z in np.linspace(0, len(region) - 1, n).round().astype(int)
    ]


def simulate_pairs(clean: list[np.ndarray], config: SimulationConfig, seed: int):
    """One (blurred uint16 ADU, sharp float32 ADU) pair per clean image, each its own depth map."""
    rng = np.random.default_rng(seed)
    r = config.margin
    pairs = []
    for image in clean:
        # the PSF radius of real context on each side (reflected where the slice is too small)
        padded = np.pad(image, r, mode="reflect")
        out = simulate_batch(padded[None], rng, config, pad=False)
        blurred = np.clip(np.rint(out["blurred"][0].numpy()), 0, 65535).astype(np.uint16)
        pairs.append((blurred, out["sharp"][0].numpy().astype(np.float32)))
    return pairs


def write_pairs(folder: Path, pairs) -> None:
    for kind in ("blurred", "sharp"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for i, (blurred, sharp) in enumerate(pairs):
        tifffile.imwrite(folder / "blurred" / f"pair{i:03d}.tif", blurred)
        tifffile.imwrite(folder / "sharp" / f"pair{i:03d}.tif", sharp)


def read_pairs(folder: Path):
    names = sorted(p.name for p in (folder / "blurred").glob("*.tif"))
    return [(tifffile.imread(folder / "blurred" / n), tifffile.imread(folder / "sharp" / n)) for n in names]


def make_data(args, config: SimulationConfig) -> tuple[Path, Path]:
    data = args.out / "data"
    stamp = data / "settings.json"
    skip = ("out", "steps", "lr", "threads", "device", "base", "batch", "patch")
    settings = {k: v for k, v in vars(args).items() if k not in skip}
    settings["clean"] = "cells3d lateral regions, resampled to the camera's pixels"
    settings = json.loads(json.dumps(settings, default=str))
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return data / "train", data / "test"
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    px = args.pixel_um
    write_pairs(
        data / "train", simulate_pairs(clean_slices("train", args.train_pairs, px), config, args.seed)
    )
    write_pairs(
        data / "test", simulate_pairs(clean_slices("test", args.test_pairs, px), config, args.seed + 1)
    )
    stamp.write_text(json.dumps(settings, indent=1))
    print(
        f"simulated {args.train_pairs} training and {args.test_pairs} test pairs in "
        f"{time.perf_counter() - t0:.0f} s ({data})",
        file=sys.stderr,
    )
    return data / "train", data / "test"


def fine_tune(args, train: Path) -> Path:
    name = "finetune-example"
    config = {
        "name": name,
        "data": {
            "source": "folder",
            "blurred_dir": str(train / "blurred"),
            "sharp_dir": str(train / "sharp"),
        },
        "patch": args.patch,
        "batch_size": args.batch,
        "steps": args.steps,
        "lr": args.lr,
        "warmup_steps": max(1, min(10, args.steps // 10)),
        "val_every": max(1, args.steps // 10),
        "val_size": 8,
        "val_patch": args.patch,
        "checkpoint_every": max(1, min(50, args.steps)),
        "seed": args.seed,
    }
    path = args.out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    dgno = shutil.which("dgno")
    command = [dgno] if dgno else [sys.executable, "-m", "napari_dgno.cli"]
    command += ["train", "--config", str(path), "--base", args.base, "--output-dir", str(args.out / "runs")]
    command += ["--no-resume", "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    print("$ " + " ".join(command), file=sys.stderr)
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    args.train_seconds = time.perf_counter() - t0
    args.train_command = " ".join(command)
    return args.out / "runs" / name / name


def evaluate(model, pairs, args) -> np.ndarray:
    """PSNR of each restored test image against its sharp image (data range of the ground truth)."""
    out = []
    for blurred, sharp in pairs:
        restored = napari_dgno.deblur(blurred, model, device=args.device, threads=args.threads)
        out.append(psnr_ssim(restored, sharp)[0])
    return np.array(out)


def mean_se(values: np.ndarray) -> str:
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} ± {se:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    config = simulation(args)
    train, test = make_data(args, config)
    stem = fine_tune(args, train)
    pairs = read_pairs(test)
    inputs = np.array([psnr_ssim(b.astype(np.float32), s)[0] for b, s in pairs])
    shipped = evaluate(napari_dgno.load_model(args.base, args.device), pairs, args)
    tuned = evaluate(napari_dgno.load_model(str(stem), args.device), pairs, args)
    gain = tuned - shipped
    optics = config.optics
    setup = (
        f"NA {optics.na} (n {optics.n_medium}), {optics.pixel_um} µm pixels, {optics.wavelength_um} µm, "
        f"spherical {optics.spherical} waves RMS, defocus ≤ {args.max_defocus_um} µm"
    )
    rows = [
        "| | PSNR (dB), mean ± s.e. |",
        "|---|---|",
        f"| blurred input | {mean_se(inputs)} |",
        f"| shipped `{args.base}` | {mean_se(shipped)} |",
        f"| fine-tuned ({args.steps} steps × {args.batch}, {args.patch}²) | {mean_se(tuned)} |",
        f"| gain of fine-tuning (paired) | {mean_se(gain)} |",
    ]
    table = "\n".join(rows)
    shapes = sorted({b.shape for b, _ in pairs})
    wall = time.perf_counter() - started
    text = (
        f"{len(pairs)} held-out test images ({', '.join('x'.join(map(str, s)) for s in shapes)} px, "
        f"distinct z-slices of cells3d's test region); optics: {setup}.\n\n{table}\n\n"
        f"Fine-tuning took {args.train_seconds / 60:.1f} min ({args.steps} steps), the whole script "
        f"{wall / 60:.1f} min. Command: `python {' '.join(sys.argv)}`; training: `{args.train_command}`.\n"
    )
    (args.out / "results.md").write_text(text)
    results = {
        "setup": setup,
        "base": args.base,
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "test_images": len(pairs),
        "lr": args.lr,
        "train_seconds": round(args.train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "command": "python " + " ".join(sys.argv),
        "train_command": args.train_command,
        "gain": {"mean": float(gain.mean()), "se": float(gain.std(ddof=1) / np.sqrt(len(gain)))},
        "psnr": {"input": inputs.tolist(), "shipped": shipped.tolist(), "fine_tuned": tuned.tolist()},
        "model": str(stem),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
