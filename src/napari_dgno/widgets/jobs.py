"""Running a dock's job off the GUI thread: a plain function ``job(progress, cancel)`` becomes a napari
thread worker with progress, cancellation and one handle whose signals report how it ended."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import traceback
from collections.abc import Callable

from qtpy.QtCore import QObject, Signal

from ..errors import Cancelled, DGNOError

log = logging.getLogger(__name__)

POLL_S = 0.05


class JobHandle(QObject):
    """One running job: Qt signals on the GUI thread, a thread-safe ``cancel()``."""

    progressed = Signal(int, int)  # done, total
    event = Signal(object)  # anything else the job reports on the way (training steps, log lines)
    succeeded = Signal(object)
    failed = Signal(object)  # the exception
    cancelled = Signal()
    finished = Signal()

    def __init__(self, description: str):
        super().__init__()
        self.description = description
        self._cancel = threading.Event()
        self.worker = None
        self.pbar = None
        self.done = False

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()


def _job_generator(job: Callable, handle: JobHandle, with_events: bool = False):
    """Runs ``job(progress, cancel[, emit])`` in a helper thread and yields what it reports.

    Library functions report through callbacks, which cannot ``yield``; a queue turns the callbacks
    into the generator's yields, so napari's worker stays the one place that talks to Qt. Each
    yield is ``(last progress or None, [events in order])``: progress is coalesced, events are not.
    """
    updates: queue.SimpleQueue = queue.SimpleQueue()
    box: dict = {}

    def progress(done, total):
        updates.put(("progress", (int(done), int(total))))

    def emit(event):
        updates.put(("event", event))

    def target():
        args = (progress, handle._cancel.is_set) + ((emit,) if with_events else ())
        try:
            box["result"] = job(*args)
        except BaseException as exc:  # handed to the GUI thread below
            box["error"] = exc
            box["traceback"] = traceback.format_exc()

    thread = threading.Thread(target=target, name=f"napari-dgno {handle.description}", daemon=True)
    thread.start()
    while True:
        thread.join(POLL_S)
        last, events = None, []
        while True:
            try:
                kind, payload = updates.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                last = payload
            else:
                events.append(payload)
        if last is not None or events:
            yield last, events
        if not thread.is_alive():
            break
    if "error" in box:
        error = box["error"]
        if isinstance(error, Cancelled):
            return ("cancelled", None)
        if not isinstance(error, DGNOError):
            log.error("napari-dgno %s failed:\n%s", handle.description, box["traceback"])
        return ("error", error)
    if handle.cancel_requested:
        return ("cancelled", None)  # finished after Cancel was pressed: the result is dropped
    return ("ok", box.get("result"))


def start_job(job: Callable, description: str, *, activity: bool = True, events: bool = False) -> JobHandle:
    """Start ``job(progress, cancel) -> result`` in a napari ``thread_worker``; return its handle.

    With ``events`` the job is called as ``job(progress, cancel, emit)`` and every ``emit(obj)``
    arrives, in order, as the handle's ``event(obj)`` (a training run's steps and validations): one
    channel for everything a job reports, so no dock keeps a queue of its own.
    The handle emits ``progressed(done, total)``, then exactly one of ``succeeded(result)``,
    ``failed(exc)`` or ``cancelled()``, then ``finished()``; all on the GUI thread. A job that
    finishes after ``cancel()`` counts as cancelled, so a cancelled run never adds anything. With
    ``activity`` the progress also shows in napari's activity dock (``napari.utils.progress``).
    """
    from napari.qt.threading import create_worker

    handle = JobHandle(description)
    if activity:
        from napari.utils import progress

        handle.pbar = progress(total=0, desc=f"napari-dgno: {description}")

    def on_yield(value):
        last, reported = value
        for event in reported:
            handle.event.emit(event)
        if last is None:
            return
        done, total = last
        if handle.pbar is not None:
            if handle.pbar.total != total:
                handle.pbar.total = total
            handle.pbar.update(done - handle.pbar.n)  # emits napari's progress event
        handle.progressed.emit(done, total)

    def on_return(value):
        status, payload = value
        if status == "ok":
            handle.succeeded.emit(payload)
        elif status == "cancelled":
            handle.cancelled.emit()
        else:
            handle.failed.emit(payload)

    def on_error(exc):  # only if the plumbing itself breaks
        handle.failed.emit(exc)

    def on_finished():
        if handle.pbar is not None:
            handle.pbar.close()
            handle.pbar = None
        handle.done = True
        handle.finished.emit()
        _RUNNING.discard(handle)

    worker = create_worker(_job_generator, job, handle, events, _start_thread=False)
    worker.yielded.connect(on_yield)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    handle.worker = worker
    _RUNNING.add(handle)  # keep the handle alive until the worker is done
    worker.start()
    return handle


_RUNNING: set[JobHandle] = set()


def cancellable_network(model, cancel: Callable[[], bool]):
    """A context in which ``model``'s network raises :class:`Cancelled` inside its forward pass as
    soon as ``cancel()`` is true: Cancel then lands within one layer, not one tile (a tile can take
    many seconds on a busy CPU). ``model``: a loaded ``DeblurModel`` or a bare network."""
    import torch

    from ..model.interrupt import interruptible

    net = getattr(model, "net", model)
    if not isinstance(net, torch.nn.Module):
        return contextlib.nullcontext()
    return interruptible(net, cancel, lambda: Cancelled("cancelled"))
