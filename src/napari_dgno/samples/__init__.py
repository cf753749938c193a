"""Offline sample data: a defocused nuclei image with its ground truth, shipped in the package.

Built by ``scripts/make_sample.py`` from a slice of cells3d's test region (never trained or validated
on), resampled to a 60x/1.4 oil objective on a 6.5 µm sCMOS camera (0.1083 µm pixels) and blurred by
our simulator (spatially varying defocus with jumps, 16-bit sCMOS noise); no download at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parent
BLURRED = "defocused_nuclei_blurred.tif"
SHARP = "defocused_nuclei_sharp.tif"
DEPTH = "defocused_nuclei_depth.tif"
PIXEL_UM = 0.1083  # the simulated microscope's pixel (60x/1.4 oil, 6.5 µm sCMOS); also in the files' info
NAME = "defocused nuclei"

__all__ = ["defocused_nuclei", "load_defocused_nuclei"]


def load_defocused_nuclei() -> dict:
    """``{"blurred": uint16, "sharp": uint16, "depth": float32 µm, "info": dict}`` (no napari needed)."""
    import tifffile

    out: dict = {}
    for key, name in (("blurred", BLURRED), ("sharp", SHARP), ("depth", DEPTH)):
        with tifffile.TiffFile(SAMPLE_DIR / name) as tif:
            out[key] = tif.asarray()
            meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        if key == "blurred":
            out["info"] = json.loads(meta.get("napari_dgno_sample", "{}"))
    return out


def defocused_nuclei() -> list[tuple]:
    """napari sample: the blurred image on top (selected), ground truth and defocus map hidden below."""
    sample = load_defocused_nuclei()
    info = sample["info"]
    pixel = float(info.get("pixel_um", PIXEL_UM))
    geometry = {"scale": (pixel, pixel), "units": ("µm", "µm")}
    meta = {"napari_dgno_sample": info}

    def limits(image):
        lo, hi = np.percentile(image, [0.5, 99.9])
        return float(lo), float(max(hi, lo + 1))

    return [
        (
            sample["sharp"],
            {
                "name": f"{NAME} (ground truth)",
                "visible": False,
                "contrast_limits": limits(sample["sharp"]),
                "metadata": meta,
                **geometry,
            },
            "image",
        ),
        (
            sample["depth"],
            {
                "name": f"{NAME} (true defocus µm)",
                "visible": False,
                "colormap": "viridis",
                "opacity": 0.6,
                "metadata": meta,
                **geometry,
            },
            "image",
        ),
        (
            sample["blurred"],
            {"name": NAME, "contrast_limits": limits(sample["blurred"]), "metadata": meta, **geometry},
            "image",
        ),
    ]
