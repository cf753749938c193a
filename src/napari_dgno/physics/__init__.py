"""Physics of defocus: pupil-model PSFs, depth maps, scatter blur, camera noise, PSF fitting.

numpy/scipy/torch only; the data pipeline, the fine-tune dock and the PSF overlay all build on it.
"""

from napari_dgno.physics.blur import (
    EigenPSFBasis,
    eigen_psf_basis,
    scatter_blur,
    scatter_blur_direct,
    scatter_blur_torch,
)
from napari_dgno.physics.depth import DepthConfig, random_depth_map
from napari_dgno.physics.fit import DefocusMap, fit_defocus, fit_defocus_map
from napari_dgno.physics.noise import CameraConfig, camera_noise, noiseless_camera
from napari_dgno.physics.psf import Optics, default_psf_size, defocus_psf, energy_radius
from napari_dgno.physics.simulate import (
    SimulationConfig,
    relative_intensity,
    simulate_batch,
    simulate_pair,
)

__all__ = [
    "CameraConfig",
    "DefocusMap",
    "DepthConfig",
    "EigenPSFBasis",
    "Optics",
    "SimulationConfig",
    "camera_noise",
    "default_psf_size",
    "defocus_psf",
    "eigen_psf_basis",
    "energy_radius",
    "fit_defocus",
    "fit_defocus_map",
    "noiseless_camera",
    "random_depth_map",
    "relative_intensity",
    "scatter_blur",
    "scatter_blur_direct",
    "scatter_blur_torch",
    "simulate_batch",
    "simulate_pair",
]
