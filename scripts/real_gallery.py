"""Draw docs/images/real_gallery.png: real BBBC006 fields before and after the shipped default model.

Three images of ``../shared/real/`` (two far out of focus, one in focus), input | deblurred side by
side, each pair on one display range (so brightness differences are the method's, not the display's),
labelled with the grid ratio and the background-noise ratio of ``napari_dgno.bench.real``, then a
96-px crop of both at full resolution: an 8-px grid cannot be seen in a whole field shrunk to fit a
page. For looking only: nothing is selected on these images.

    python scripts/real_gallery.py [--real DIR] [--out PNG] [--model NAME|PATH] [--threads N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("bbbc006_z00_a19_s2.tif", "bbbc006_z00_h09_s2.tif", "bbbc006_infocus_a02_s1.tif")
DISPLAY_PERCENTILES = (0.5, 99.8)
CROP_PX = 96


def display_range(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """One grey range for a pair: the lower of their low percentiles, the higher of their high ones."""
    lo = min(np.percentile(a, DISPLAY_PERCENTILES[0]), np.percentile(b, DISPLAY_PERCENTILES[0]))
    hi = max(np.percentile(a, DISPLAY_PERCENTILES[1]), np.percentile(b, DISPLAY_PERCENTILES[1]))
    return float(lo), float(hi)


def crop_box(image: np.ndarray, size: int = CROP_PX) -> tuple[slice, slice]:
    """A ``size``² window centred on the brightest smoothed spot (a nucleus), inside the image."""
    from scipy import ndimage as ndi

    smooth = ndi.uniform_filter(np.asarray(image, dtype=np.float64), size // 2)
    cy, cx = np.unravel_index(np.argmax(smooth), smooth.shape)
    y0 = int(np.clip(cy - size // 2, 0, image.shape[0] - size))
    x0 = int(np.clip(cx - size // 2, 0, image.shape[1] - size))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real", help="folder of the images")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "real_gallery.png")
    p.add_argument("--model", default=None, help="model name or checkpoint (default: the shipped default)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import napari_dgno
    from napari_dgno.bench.real import load_plane, measure

    model = napari_dgno.load_model(args.model, device="cpu")
    fig, axes = plt.subplots(
        len(IMAGES), 4, figsize=(16, 3.6 * len(IMAGES)), squeeze=False, width_ratios=(1.34, 1.34, 1, 1)
    )
    for row, name in zip(axes, IMAGES, strict=True):
        image = load_plane(args.real / name)
        restored = napari_dgno.deblur(image, model, device="cpu", threads=args.threads)
        m = measure(name, image, restored)
        box = crop_box(image)
        whole, crop = display_range(image, restored), display_range(image[box], restored[box])
        kind = "in focus" if "infocus" in name else "out of focus, z00"
        titles = (
            f"{name} ({kind})\ninput: grid ratio {m.grid_in:.1f}",
            f"deblurred ({model.name}): grid ratio {m.grid_out:.1f},\n"
            f"background noise x{m.noise_ratio:.2f} of the input",
            f"input, {CROP_PX}-px crop",
            f"deblurred, {CROP_PX}-px crop (same range as the input crop)",
        )
        pictures = (image, restored, image[box], restored[box])
        for ax, picture, title, (lo, hi) in zip(
            row, pictures, titles, (whole, whole, crop, crop), strict=True
        ):
            ax.imshow(picture, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        print(
            f"{name}: grid {m.grid_in:.1f} -> {m.grid_out:.1f}, sharpness {m.sharpness_in:.4f} -> "
            f"{m.sharpness_out:.4f}, background noise x{m.noise_ratio:.2f}"
        )
    fig.suptitle(
        "Real BBBC006 widefield nuclei (20x, no ground truth): input | deblurred, one display range per "
        "pair, then a crop of each at full resolution (its own range)",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
