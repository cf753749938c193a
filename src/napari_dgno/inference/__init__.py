"""Inference: device choice, element-aligned tiling with feathered blending, and the deblur engine."""

from ..devices import autocast_context, available_devices, cpu_threads, resolve_device
from ..options import DeblurOptions, DeblurReport
from ..tiling import BandBlender, Blender, Tile, auto_overlap, auto_tile, plan_tiles, tile_weight
from .engine import (
    DeblurModel,
    deblur,
    deblur_to,
    default_model_name,
    list_models,
    load_model,
    shipped_model_dir,
    user_model_dir,
)
from .ensemble import dihedral_average

__all__ = [
    "BandBlender",
    "Blender",
    "DeblurModel",
    "DeblurOptions",
    "DeblurReport",
    "Tile",
    "auto_overlap",
    "auto_tile",
    "autocast_context",
    "available_devices",
    "cpu_threads",
    "deblur",
    "deblur_to",
    "default_model_name",
    "dihedral_average",
    "list_models",
    "load_model",
    "plan_tiles",
    "resolve_device",
    "shipped_model_dir",
    "tile_weight",
    "user_model_dir",
]
