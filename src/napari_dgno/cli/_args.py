"""Argument types and choices that several subcommands share (no torch: ``dgno --help`` stays quick)."""

from __future__ import annotations

import argparse

# The same as napari_dgno.model.FLUX_VARIANTS, which would import torch; tests/test_cli.py pins both.
FLUX_CHOICES = ("face", "p0dg", "none")
PRESET_TABLE = ("paper", "small")


def pixels_or_auto(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more pixels, got {value}")
    return value
