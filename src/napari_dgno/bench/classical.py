"""Classical baselines, tuned on the validation set the way a biologist with one setting would.

Every test image has its own microscope, and a biologist knows their objective, so the global-PSF
methods get each image's true optics. What they do not know is how far out of focus the specimen
is: they get one global blur level, a geometric blur radius ``R`` in pixels, turned into a defocus
``z`` on each image's optics (``geometric_depth_um``) so that one tuned setting means the same
geometric blur in pixels on every microscope. The match is not exact: the PSF's 80 %-energy
radius is about 0.8 R at NA 0.45 but 0.5–0.6 R at NA 0.95–1.45. Tuned settings: Wiener (R,
balance), Richardson–Lucy (R, iterations) and RL with total-variation regularisation (R, λ,
iterations): the regularised method is the fair one on noisy images, since RL stopped early
still leaves the noise in.

Two **oracles** are handed the true depth map and optics (only their iteration count is tuned):
patch-wise RL and spatially variant RL with the simulator's exact operator. They show what knowing
the blur everywhere buys a classical method; they bound nothing (they are unregularised).

Every setting is chosen on :func:`~napari_dgno.bench.testset.tuning_set` (the validation set) and
only then applied to the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from napari_dgno.bench.testset import BenchItem
from napari_dgno.physics import deconv
from napari_dgno.physics.microscope import geometric_depth_um
from napari_dgno.physics.psf import Optics, defocus_psf

# Geometric blur radii (px) for the one global blur: dense where the optimum lies (a global PSF
# must stay below most of the image's blur), up to the largest blur the test microscopes draw.
RADIUS_GRID_PX = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)
RADIUS_GRID_QUICK_PX = (2.0, 4.0, 8.0, 16.0)
BALANCES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
TV_WEIGHTS = (0.001, 0.003, 0.01, 0.02)  # Dey et al. use 0.002; dim images want more
TV_WEIGHTS_QUICK = (0.005, 0.02)
MAX_ITERATIONS = 30
TV_MAX_ITERATIONS = 40  # TV lets RL run longer before noise wins
QUICK_MAX_ITERATIONS = 15
PATCH_PX, PATCH_OVERLAP_PX = 64, 32

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClassicalSettings:
    """The tuned settings and the mean PSNR (ground-truth range) each reached on the tuning set."""

    wiener_radius_px: float
    wiener_balance: float
    rl_radius_px: float
    rl_iterations: int
    rltv_radius_px: float
    rltv_weight: float
    rltv_iterations: int
    patch_rl_iterations: int
    sv_rl_iterations: int
    tuning_psnr: dict
    tuning_fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassicalMethod:
    key: str
    label: str
    settings: str
    kind: str  # "classical" or "oracle"
    restore: Callable[[BenchItem], np.ndarray]


def optics_of(item: BenchItem) -> Optics:
    """The microscope that took ``item`` (the default optics for an item without one)."""
    return item.config.optics if item.config is not None else Optics()


def global_psf(item: BenchItem, radius_px: float) -> np.ndarray:
    """The defocus PSF of geometric blur radius ``radius_px`` on ``item``'s own optics."""
    optics = optics_of(item)
    return defocus_psf(geometric_depth_um(radius_px, optics), optics)


def tune_classical(
    items: list[BenchItem],
    radius_grid=RADIUS_GRID_PX,
    balances=BALANCES,
    max_iterations: int = MAX_ITERATIONS,
    tv_weights=TV_WEIGHTS,
    tv_max_iterations: int = TV_MAX_ITERATIONS,
    log: Log | None = None,
    fingerprint: str = "",
) -> ClassicalSettings:
    """Grid search on ``items`` for the best mean PSNR: (R, balance) for Wiener, (R, iterations)
    for RL, (R, λ, iterations) for RL-TV, iterations for the two oracles. Every RL run yields all
    its iterates, so a grid over 1…``max_iterations`` costs one run per (R, λ)."""
    log = log or (lambda _msg: None)
    n = len(items)
    wiener = np.zeros((len(radius_grid), len(balances)))
    rl = np.zeros((len(radius_grid), max_iterations))
    rltv = np.zeros((len(radius_grid), len(tv_weights), tv_max_iterations))
    for ir, radius in enumerate(radius_grid):
        for item in items:
            psf = global_psf(item, radius)
            for ib, balance in enumerate(balances):
                wiener[ir, ib] += _psnr(deconv.wiener(item.blurred, psf, balance), item) / n
            for it, est in enumerate(deconv.richardson_lucy_steps(item.blurred, psf, max_iterations)):
                rl[ir, it] += _psnr(est, item) / n
            for il, weight in enumerate(tv_weights):
                steps = deconv.richardson_lucy_tv_steps(item.blurred, psf, tv_max_iterations, weight)
                for it, est in enumerate(steps):
                    rltv[ir, il, it] += _psnr(est, item) / n
        log(f"tuning: R = {radius:g} px done")
    patch = np.zeros(max_iterations)
    sv = np.zeros(max_iterations)
    for item in items:
        steps = deconv.patchwise_rl_steps(
            item.blurred, item.depth, max_iterations, optics_of(item), PATCH_PX, PATCH_OVERLAP_PX
        )
        for it, est in enumerate(steps):
            patch[it] += _psnr(est, item) / n
        basis = item.config.basis()
        for it, est in enumerate(
            deconv.spatially_variant_rl_steps(item.blurred, item.depth, basis, max_iterations)
        ):
            sv[it] += _psnr(est, item) / n
    log("tuning: patch-wise and spatially variant RL done")

    wr, wb = np.unravel_index(np.argmax(wiener), wiener.shape)
    rr, ri = np.unravel_index(np.argmax(rl), rl.shape)
    tr, tl, ti = np.unravel_index(np.argmax(rltv), rltv.shape)
    return ClassicalSettings(
        wiener_radius_px=float(radius_grid[wr]),
        wiener_balance=float(balances[wb]),
        rl_radius_px=float(radius_grid[rr]),
        rl_iterations=int(ri) + 1,
        rltv_radius_px=float(radius_grid[tr]),
        rltv_weight=float(tv_weights[tl]),
        rltv_iterations=int(ti) + 1,
        patch_rl_iterations=int(np.argmax(patch)) + 1,
        sv_rl_iterations=int(np.argmax(sv)) + 1,
        tuning_psnr={
            "blurred": float(np.mean([_psnr(i.blurred, i) for i in items])),
            "wiener": float(wiener.max()),
            "rl": float(rl.max()),
            "rltv": float(rltv.max()),
            "patch_rl": float(patch.max()),
            "sv_rl": float(sv.max()),
        },
        tuning_fingerprint=fingerprint,
    )


def classical_methods(s: ClassicalSettings) -> list[ClassicalMethod]:
    """The classical rows of the benchmark, at the tuned settings."""
    return [
        ClassicalMethod(
            "wiener",
            "Wiener (true optics, one tuned blur)",
            f"R = {s.wiener_radius_px:g} px, balance = {s.wiener_balance:g}",
            "classical",
            lambda item: deconv.wiener(item.blurred, global_psf(item, s.wiener_radius_px), s.wiener_balance),
        ),
        ClassicalMethod(
            "rl",
            "Richardson–Lucy (true optics, one tuned blur)",
            f"R = {s.rl_radius_px:g} px, {s.rl_iterations} iterations",
            "classical",
            lambda item: deconv.richardson_lucy(
                item.blurred, global_psf(item, s.rl_radius_px), s.rl_iterations
            ),
        ),
        ClassicalMethod(
            "rltv",
            "RL + total variation (true optics, one tuned blur)",
            f"R = {s.rltv_radius_px:g} px, λ = {s.rltv_weight:g}, {s.rltv_iterations} iterations",
            "classical",
            lambda item: deconv.richardson_lucy_tv(
                item.blurred, global_psf(item, s.rltv_radius_px), s.rltv_iterations, s.rltv_weight
            ),
        ),
        ClassicalMethod(
            "patch_rl",
            f"Patch-wise RL ({PATCH_PX}-px patches, true depth map and optics, oracle)",
            f"median depth per patch, {s.patch_rl_iterations} iterations",
            "oracle",
            lambda item: deconv.patchwise_rl(
                item.blurred, item.depth, s.patch_rl_iterations, optics_of(item), PATCH_PX, PATCH_OVERLAP_PX
            ),
        ),
        ClassicalMethod(
            "sv_rl",
            "Spatially variant RL (true depth map and optics, oracle)",
            f"exact scatter operator, {s.sv_rl_iterations} iterations, unregularised",
            "oracle",
            lambda item: deconv.spatially_variant_rl(
                item.blurred, item.depth, item.config.basis(), s.sv_rl_iterations
            ),
        ),
    ]


def _psnr(restored: np.ndarray, item: BenchItem) -> float:
    """``psnr_ssim(restored, item.sharp, "gt")[0]`` without the SSIM, which the thousands of
    tuning evaluations do not need (a test checks the two agree)."""
    truth = np.asarray(item.sharp, dtype=np.float64)
    data_range = float(truth.max() - truth.min()) or 1.0
    return float(
        peak_signal_noise_ratio(truth, np.asarray(restored, dtype=np.float64), data_range=data_range)
    )
