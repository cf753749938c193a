"""DGNO in PyTorch: configs, presets, the network, and a same-budget CNN baseline."""

from __future__ import annotations

from torch import nn

from .config import FLUX_MODES, FLUX_VARIANTS, PRESETS, DGNOConfig, NAFNetConfig, preset_config
from .dgno import DGNO
from .nafnet import NAFNet

# Architecture name (as stored in checkpoints) -> (config class, network class).
ARCHITECTURES = {"dgno": (DGNOConfig, DGNO), "nafnet": (NAFNetConfig, NAFNet)}


def build_model(architecture: str, config: dict | DGNOConfig | NAFNetConfig) -> nn.Module:
    """Build a network from an architecture name and a config (dataclass or its dict)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, net_cls = ARCHITECTURES[architecture]
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    return net_cls(config)


def architecture_of(model: nn.Module) -> str:
    for name, (_, net_cls) in ARCHITECTURES.items():
        if isinstance(model, net_cls):
            return name
    raise ValueError(f"not a napari-dgno network: {type(model).__name__}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ARCHITECTURES",
    "DGNO",
    "DGNOConfig",
    "FLUX_MODES",
    "FLUX_VARIANTS",
    "NAFNet",
    "NAFNetConfig",
    "PRESETS",
    "architecture_of",
    "build_model",
    "count_parameters",
    "preset_config",
]
