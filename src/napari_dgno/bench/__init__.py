"""``dgno bench``: DGNO against classical deconvolution and same-budget baselines on one frozen test set.

Names load on first use, so importing the package pulls in no torch until a name is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BenchReport": "rows",
    "BenchRow": "rows",
    "default_models": "models",
    "run_bench": "run",
    "train_baselines": "models",
    "check_real_images": "real",
    "BenchItem": "testset",
    "BenchSet": "testset",
    "benchmark_set": "testset",
    "tuning_set": "testset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
