"""napari-dgno: remove spatially varying defocus blur with a Discontinuous Galerkin Neural Operator.

The Python API is two functions (torch is imported only when they are first used)::

    import napari_dgno
    model = napari_dgno.load_model()  # the shipped default, or a name / checkpoint path
    restored = napari_dgno.deblur(image, model)  # float32, same shape, input's intensity units
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP threads that spin while they wait turn a shared machine into a fight for cores: with one
# core busy elsewhere, the default (active) policy made a run 3-45x slower, the passive one about 2x
# (dgno bench --speed). OpenMP reads this once, when torch loads it, so it is set before torch is
# imported, and only if the user has not chosen a policy.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LAZY = {"deblur", "deblur_to", "load_model", "list_models", "DeblurModel", "DeblurOptions", "DeblurReport"}


def __getattr__(name):
    if name in _LAZY:
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'napari_dgno' has no attribute {name!r}")


__all__ = [
    "DeblurModel",
    "DeblurOptions",
    "DeblurReport",
    "__version__",
    "deblur",
    "deblur_to",
    "list_models",
    "load_model",
]
