"""napari-dgno: remove spatially varying defocus blur with a Discontinuous Galerkin Neural Operator."""

__version__ = "0.1.0"
