"""Model cost as papers report it: parameters and multiply-accumulates per image.

Deblurring papers (DGNO's table included) print "GFLOPs" that are really giga multiply-accumulates
(the fvcore / thop convention). ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC
for convolutions and matrix products, so we halve it. Element-wise work (the scan's recurrence,
activations, norms) is not counted, as in those tools.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from . import build_model, count_parameters, preset_config


def _device_of(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _onednn_conv_flops(x_shape, w_shape, *_args, out_shape=None, **_kwargs) -> int:
    """FLOPs of ``aten.mkldnn_convolution``, which ``blocks.pointwise`` calls on the CPU and the
    counter does not know: without it a CPU count missed every 1x1 convolution."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


_CUSTOM_FLOPS = {torch.ops.aten.mkldnn_convolution: _onednn_conv_flops}


def count_gmacs(model: nn.Module, size: int = 256, in_channels: int | None = None) -> float:
    """Giga multiply-accumulates for one forward pass on a 1 x C x size x size image.

    Runs on the model's device; build the model under ``torch.device("meta")`` to count for free
    (shapes only, no memory, no arithmetic).
    """
    if in_channels is None:
        in_channels = getattr(getattr(model, "config", None), "in_channels", 1)
    x = torch.zeros(1, in_channels, size, size, device=_device_of(model))
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


@functools.lru_cache(maxsize=64)
def preset_cost(preset: str, flux: str | None = None, size: int = 256, **overrides) -> tuple[int, float]:
    """``(parameters, GMACs at size x size)`` of a DGNO preset, computed on the meta device (and
    remembered: presets do not change while the program runs)."""

    if flux is not None:
        overrides["flux"] = flux
    config = preset_config(preset, **overrides)
    try:
        with torch.device("meta"):
            model = build_model("dgno", config)
        return count_parameters(model), count_gmacs(model, size)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count for real
        model = build_model("dgno", config)
        return count_parameters(model), count_gmacs(model, size)
