"""Exceptions with one-line messages: the CLI prints them as they are, widgets show them as notifications."""


class DGNOError(Exception):
    """Base class for errors that have a clear, user-facing, one-line reason."""


class InputError(DGNOError, ValueError):
    """The image, file or option the user handed us cannot be processed as it is."""


class CheckpointError(DGNOError):
    """A checkpoint is missing, corrupt, truncated, or does not match its architecture."""


class Cancelled(DGNOError):
    """The user (or a callback) asked the running job to stop."""


def one_line(text) -> str:
    """A message on one line: what every "dgno: error: ..." and every failed-file report prints."""
    return " ".join(str(text).split())
