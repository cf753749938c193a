"""Which layers a dock may use, and what an output layer inherits from its input (no widgets here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import InputError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Layers


def layer_kind(layer) -> str:
    # __class__, not type(): napari hands commands a proxy object that reports the real class
    return layer.__class__.__name__.lower() if layer is not None else "none"


def check_image_layer(layer, element_size: int | None = None, what: str = "deblur") -> None:
    """Raise :class:`InputError` (one line) unless ``layer`` is a single-channel image we can ``what``.

    Shared by the docks and the menu command, so the same bad choice gives the same message.
    """
    from napari.layers import Image

    if layer is None:
        raise InputError(
            f"choose an image layer to {what} (open an image, or File > Open Sample > Defocused nuclei)"
        )
    if not isinstance(layer, Image):
        raise InputError(f"'{layer.name}' is a {layer_kind(layer)} layer; choose an image layer")
    if getattr(layer, "rgb", False):
        raise InputError(
            f"'{layer.name}' is an RGB image; DGNO works on one channel (split the channels first)"
        )
    if getattr(layer, "multiscale", False):
        raise InputError(
            f"'{layer.name}' is a multiscale (pyramid) layer; open its full-resolution level as a plain layer"
        )
    shape = tuple(int(s) for s in layer.data.shape)
    if len(shape) < 2:
        raise InputError(f"'{layer.name}' has shape {shape}; need at least Y and X")
    if element_size and (shape[-2] < element_size or shape[-1] < element_size):
        raise InputError(
            f"'{layer.name}' is {shape[-2]}x{shape[-1]} px, smaller than one {element_size}-px "
            "element; choose a smaller element size"
        )


def spatial_kwargs(layer) -> dict:
    """Geometry and labels an output layer copies from its input (so it lands on top of it)."""
    out = {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
    }
    for name in ("units", "axis_labels"):
        value = getattr(layer, name, None)
        if value is not None:
            out[name] = tuple(str(v) for v in value)
    return out


def current_plane_index(viewer, layer) -> tuple[int, ...]:
    """Index of the plane of ``layer`` (leading axes only) that the viewer currently shows."""
    ndim = layer.ndim
    if ndim <= 2:
        return ()
    point = list(viewer.dims.point)[-ndim:]
    data = layer.world_to_data(point)
    shape = layer.data.shape
    return tuple(int(min(max(round(float(v)), 0), shape[i] - 1)) for i, v in enumerate(data[:-2]))


OUTPUT_KEYS = ("napari_dgno", "napari_dgno_overlay")  # metadata keys of layers our docks made


def is_output_layer(layer, keys: Sequence[str] = OUTPUT_KEYS) -> bool:
    metadata = getattr(layer, "metadata", None) or {}
    return any(key in metadata for key in keys)
