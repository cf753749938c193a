"""napari docks and commands (Qt lives here only; the work is done by the library they call).

* :class:`DeblurWidget` — deblur a layer (2-D, z/t stacks, dask) with progress and Cancel.
* :class:`OverlayWidget` — per-element learned kernels, fitted PSFs, defocus map and element grid.
* ``widgets.finetune.FinetuneWidget`` — fine-tune a model on your data (imported on its own, since
  it pulls in the training code).
* :func:`deblur_layer` — the same as a plain function returning a LayerDataTuple (scripts);
  :func:`deblur_layer_command` runs it in the background for Layers > Filter.
"""

from .deblur import DeblurWidget, deblur_layer, deblur_layer_command, output_layer_tuple
from .overlay import OverlayWidget, overlay_layer_tuples

__all__ = [
    "DeblurWidget",
    "OverlayWidget",
    "deblur_layer",
    "deblur_layer_command",
    "output_layer_tuple",
    "overlay_layer_tuples",
]
