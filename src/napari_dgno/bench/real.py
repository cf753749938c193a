"""Real images without ground truth: look and check, never train or select.

For a folder of real TIFFs (the repository's are in ``../shared/real/``, BBBC006 widefield nuclei)
each image is deblurred and three no-reference measures are taken on input and output:

- **grid ratio** (:func:`napari_dgno.metrics.grid_ratio`): power at the network's 4- and 8-px
  periods over the neighbouring frequencies; inputs score 2–5, an invented grid tens or more.
- **sharpness** (:func:`sharpness`): a normalised Brenner gradient of a lightly smoothed copy. Noise
  raises it too, so it is read together with the next one.
- **background noise** (:func:`background_noise`): the robust s.d. of a high-pass in the dimmest
  regions of the input, where there is no structure to restore; output over input above 1 means
  the method amplified noise.

No PSNR: there is no truth. These images must never choose a model or a setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_dgno.inference import engine
from napari_dgno.io.tiff import read_image
from napari_dgno.metrics import grid_ratio

__all__ = [
    "RealImageResult",
    "background_mask",
    "background_noise",
    "check_real_images",
    "real_image_paths",
    "sharpness",
]

BACKGROUND_FRACTION = 0.2  # the dimmest 20 % of the (smoothed) input is background
MASK_SMOOTHING_PX = 3.0  # pick dim *regions*, not pixels that are dim by a noise draw
HIGH_PASS_SIGMA_PX = 1.5  # what a Gaussian of this width removes is (mostly) pixel noise
MAD_TO_SD = 1.4826  # s.d. of a normal variable over its median absolute deviation
SHARPNESS_SMOOTHING_PX = 1.0  # pixel noise is not detail

Log = Callable[[str], None]


@dataclass(frozen=True)
class RealImageResult:
    """Input and output measures of one real image (intensities in the input's units)."""

    name: str
    shape: tuple[int, int]
    grid_in: float | None
    grid_out: float | None
    sharpness_in: float
    sharpness_out: float
    noise_in: float
    noise_out: float
    seconds: float

    @property
    def noise_ratio(self) -> float:
        """Background noise out / in: above 1 the method amplified noise."""
        return self.noise_out / self.noise_in if self.noise_in > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "noise_ratio": self.noise_ratio}


def sharpness(image) -> float:
    """Normalised Brenner gradient of the image smoothed by a 1-px Gaussian: the mean squared
    2-px difference (rows and columns) over 4 x the variance, i.e. 1 − ρ(2 px) averaged over both
    axes, with ρ the autocorrelation.

    Why this form: Brenner's focus measure is the classic autofocus score; over the variance it
    does not depend on offset or gain (0 for a smooth image, growing with fine detail). Without the
    smoothing, pixel noise dominates it on out-of-focus images (a denoised deblurred BBBC006 field
    scored *below* its input); the 1-px Gaussian cuts white noise's variance 12-fold and keeps
    structure of a few pixels. Noise still counts somewhat: read it with :func:`background_noise`.
    """
    x = ndi.gaussian_filter(np.asarray(image, dtype=np.float64), SHARPNESS_SMOOTHING_PX, mode="reflect")
    var = float(x.var())
    if var == 0:
        return 0.0
    dy = np.mean((x[2:] - x[:-2]) ** 2)
    dx = np.mean((x[:, 2:] - x[:, :-2]) ** 2)
    return float((dy + dx) / (4 * var))


def background_mask(image, fraction: float = BACKGROUND_FRACTION) -> np.ndarray:
    """The dimmest ``fraction`` of pixels of ``image`` smoothed by a 3-px Gaussian (dim regions)."""
    smooth = ndi.gaussian_filter(np.asarray(image, dtype=np.float64), MASK_SMOOTHING_PX, mode="reflect")
    return smooth <= np.quantile(smooth, fraction)


def background_noise(image, mask: np.ndarray | None = None) -> float:
    """Noise s.d. in the background: 1.4826 x MAD of ``image`` minus its 1.5-px Gaussian blur, over
    ``mask`` (default :func:`background_mask` of ``image``; pass the input's mask for an output so
    both are measured on the same pixels). Robust (MAD) so that a few edges in the mask do not count.
    """
    x = np.asarray(image, dtype=np.float64)
    if mask is None:
        mask = background_mask(x)
    high = (x - ndi.gaussian_filter(x, HIGH_PASS_SIGMA_PX, mode="reflect"))[mask]
    return float(MAD_TO_SD * np.median(np.abs(high - np.median(high))))


def _grid(image) -> float | None:
    """Grid ratio, or None for an image smaller than :func:`grid_ratio` accepts."""
    try:
        return grid_ratio(image)
    except ValueError:
        return None


def real_image_paths(folder: str | Path) -> list[Path]:
    """The TIFFs in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and p.is_file())


def load_plane(path: str | Path) -> np.ndarray:
    """A real image as a 2-D float32 plane (the first plane of a stack)."""
    array, _info = read_image(path, lazy=False)
    array = np.asarray(array, dtype=np.float32)
    while array.ndim > 2:
        array = array[0]
    return array


def measure(name: str, image: np.ndarray, restored: np.ndarray, seconds: float = 0.0) -> RealImageResult:
    """The three measures on an input and its restoration (background mask from the input)."""
    mask = background_mask(image)
    return RealImageResult(
        name=name,
        shape=tuple(int(s) for s in image.shape),
        grid_in=_grid(image),
        grid_out=_grid(restored),
        sharpness_in=sharpness(image),
        sharpness_out=sharpness(restored),
        noise_in=background_noise(image, mask),
        noise_out=background_noise(restored, mask),
        seconds=seconds,
    )


def check_real_images(
    model, folder: str | Path, *, threads: int | None = None, log: Log | None = None
) -> list[RealImageResult]:
    """Deblur every TIFF in ``folder`` with ``model`` (any ``deblur`` model argument) on the CPU and
    measure input and output."""
    log = log or (lambda _msg: None)
    results = []
    for path in real_image_paths(folder):
        image = load_plane(path)
        t0 = time.perf_counter()
        restored = engine.deblur(image, model, device="cpu", threads=threads)
        r = measure(path.name, image, np.asarray(restored, dtype=np.float32), time.perf_counter() - t0)
        log(
            f"real {r.name}: grid {_fmt(r.grid_in)} -> {_fmt(r.grid_out)}, sharpness "
            f"{r.sharpness_in:.3f} -> {r.sharpness_out:.3f}, background noise x{r.noise_ratio:.2f}"
        )
        results.append(r)
    return results


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
