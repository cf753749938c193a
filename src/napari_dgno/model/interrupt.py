"""Stopping a network in the middle of a pass: Stop and Cancel land within one layer, not one step.

A training step or a large tile can take many seconds on a busy CPU; a check between steps or tiles
then leaves the user waiting. :func:`interruptible` asks ``should_stop()`` before every submodule's
forward and, in training, when each layer's gradient arrives, and raises there. Checks are cheap
(an event's flag), so the cost is a few microseconds per layer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import torch

__all__ = ["interruptible"]


class _Switch:
    """``armed``: whether a true ``should_stop()`` raises now (off e.g. during validation)."""

    def __init__(self, armed: bool):
        self.armed = armed


@contextlib.contextmanager
def interruptible(
    model: torch.nn.Module,
    should_stop: Callable[[], bool] | None,
    error: Callable[[], BaseException],
    armed: bool = True,
):
    """While the yielded switch is ``armed``, a true ``should_stop()`` raises ``error()`` inside the
    network: before any submodule's forward, or during backward at any submodule's output."""
    switch = _Switch(armed)
    if should_stop is None:
        yield switch
        return

    # A loaded network may be shared (the model cache): another dock's pass through it in another
    # thread must not see this pass's stop. Gradient hooks belong to tensors of this thread's pass.
    owner = threading.get_ident()

    def check(*_):
        if switch.armed and should_stop():
            raise error()

    def before_forward(module, args):
        if threading.get_ident() == owner:
            check()

    def at_output(module, args, output):
        mine = threading.get_ident() == owner
        if mine and switch.armed and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(check)

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(before_forward))
        handles.append(module.register_forward_hook(at_output))
    try:
        yield switch
    finally:
        for handle in handles:
            handle.remove()
