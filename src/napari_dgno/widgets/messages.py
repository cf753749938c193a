"""Telling the user what happened: napari notifications and one-line error text, never a traceback."""

from __future__ import annotations

import logging

from ..errors import DGNOError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Messages


def notify(message: str, level: str = "warning") -> None:
    """A napari notification (shown in the viewer, never as a traceback dialog)."""
    from napari.utils import notifications

    show = {
        "info": notifications.show_info,
        "warning": notifications.show_warning,
        "error": notifications.show_error,
    }[level]
    show(message)


def describe_error(exc: BaseException) -> str:
    """One line for the user: our own errors already are; anything else gets its type name."""
    if isinstance(exc, DGNOError):
        return " ".join(str(exc).split())
    text = " ".join(str(exc).split()) or "no details"
    return f"unexpected {type(exc).__name__}: {text}"
