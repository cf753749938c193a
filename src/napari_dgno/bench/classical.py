"""Classical baselines tuned the way a biologist with one measured PSF would tune them.

Global Wiener and RL: one defocus ``z`` for the whole image (the bead they measured) and the
balance / iteration count that give the best mean PSNR on the *tuning* set. Patch-wise RL and
spatially variant RL are handed the true depth map, so only their iteration count is tuned: they
show what knowing the optics exactly would buy. Every setting is chosen on the tuning set and only
then applied to the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from napari_dgno.bench.testset import MAX_DEFOCUS_UM, SIM_CONFIG, BenchItem
from napari_dgno.physics import deconv
from napari_dgno.physics.psf import defocus_psf

Z_GRID_UM = tuple(float(z) for z in np.arange(0.0, MAX_DEFOCUS_UM + 0.5, 1.0))
Z_GRID_QUICK_UM = tuple(float(z) for z in np.arange(0.0, MAX_DEFOCUS_UM + 0.5, 4.0))
BALANCES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
MAX_ITERATIONS = 30
QUICK_MAX_ITERATIONS = 15
PATCH_PX, PATCH_OVERLAP_PX = 64, 32

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClassicalSettings:
    """The tuned settings and the mean PSNR (ground-truth range) each reached on the tuning set."""

    wiener_z_um: float
    wiener_balance: float
    rl_z_um: float
    rl_iterations: int
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
    kind: str  # "classical" or "upper bound"
    restore: Callable[[BenchItem], np.ndarray]


def tune_classical(
    items: list[BenchItem],
    z_grid=Z_GRID_UM,
    balances=BALANCES,
    max_iterations: int = MAX_ITERATIONS,
    log: Log | None = None,
    fingerprint: str = "",
) -> ClassicalSettings:
    """Grid search on ``items``: (z, balance) for Wiener, (z, iterations) for RL, iterations for
    patch-wise and spatially variant RL. Every RL run yields all its iterates, so a grid over
    1…``max_iterations`` costs one run per z."""
    log = log or (lambda _msg: None)
    basis = SIM_CONFIG.basis()
    n = len(items)
    wiener_psnr = np.zeros((len(z_grid), len(balances)))
    rl_psnr = np.zeros((len(z_grid), max_iterations))
    for iz, z in enumerate(z_grid):
        psf = defocus_psf(z)
        for item in items:
            for ib, balance in enumerate(balances):
                wiener_psnr[iz, ib] += _psnr(deconv.wiener(item.blurred, psf, balance), item) / n
            for it, est in enumerate(deconv.richardson_lucy_steps(item.blurred, psf, max_iterations)):
                rl_psnr[iz, it] += _psnr(est, item) / n
        log(f"tuning: z = {z:g} µm done")
    patch_psnr = np.zeros(max_iterations)
    sv_psnr = np.zeros(max_iterations)
    for item in items:
        steps = deconv.patchwise_rl_steps(
            item.blurred, item.depth, max_iterations, patch=PATCH_PX, overlap=PATCH_OVERLAP_PX
        )
        for it, est in enumerate(steps):
            patch_psnr[it] += _psnr(est, item) / n
        for it, est in enumerate(
            deconv.spatially_variant_rl_steps(item.blurred, item.depth, basis, max_iterations)
        ):
            sv_psnr[it] += _psnr(est, item) / n
    log("tuning: patch-wise and spatially variant RL done")

    wz, wb = np.unravel_index(np.argmax(wiener_psnr), wiener_psnr.shape)
    rz, ri = np.unravel_index(np.argmax(rl_psnr), rl_psnr.shape)
    blurred = float(np.mean([_psnr(i.blurred, i) for i in items]))
    return ClassicalSettings(
        wiener_z_um=float(z_grid[wz]),
        wiener_balance=float(balances[wb]),
        rl_z_um=float(z_grid[rz]),
        rl_iterations=int(ri) + 1,
        patch_rl_iterations=int(np.argmax(patch_psnr)) + 1,
        sv_rl_iterations=int(np.argmax(sv_psnr)) + 1,
        tuning_psnr={
            "blurred": blurred,
            "wiener": float(wiener_psnr.max()),
            "rl": float(rl_psnr.max()),
            "patch_rl": float(patch_psnr.max()),
            "sv_rl": float(sv_psnr.max()),
        },
        tuning_fingerprint=fingerprint,
    )


def classical_methods(s: ClassicalSettings) -> list[ClassicalMethod]:
    """The four classical rows of the benchmark, at the tuned settings."""
    basis = SIM_CONFIG.basis()
    wiener_psf, rl_psf = defocus_psf(s.wiener_z_um), defocus_psf(s.rl_z_um)
    return [
        ClassicalMethod(
            "wiener",
            "Wiener (global PSF, tuned)",
            f"z = {s.wiener_z_um:g} µm, balance = {s.wiener_balance:g}",
            "classical",
            lambda item: deconv.wiener(item.blurred, wiener_psf, s.wiener_balance),
        ),
        ClassicalMethod(
            "rl",
            "Richardson–Lucy (global PSF, tuned)",
            f"z = {s.rl_z_um:g} µm, {s.rl_iterations} iterations",
            "classical",
            lambda item: deconv.richardson_lucy(item.blurred, rl_psf, s.rl_iterations),
        ),
        ClassicalMethod(
            "patch_rl",
            f"Patch-wise RL ({PATCH_PX}-px patches, true depth)",
            f"median depth per patch, {s.patch_rl_iterations} iterations",
            "upper bound",
            lambda item: deconv.patchwise_rl(
                item.blurred, item.depth, s.patch_rl_iterations, patch=PATCH_PX, overlap=PATCH_OVERLAP_PX
            ),
        ),
        ClassicalMethod(
            "sv_rl",
            "Spatially variant RL (true depth, upper bound)",
            f"exact scatter operator, {s.sv_rl_iterations} iterations",
            "upper bound",
            lambda item: deconv.spatially_variant_rl(item.blurred, item.depth, basis, s.sv_rl_iterations),
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
