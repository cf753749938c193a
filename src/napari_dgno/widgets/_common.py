"""Pieces every napari-dgno dock shares: layer and model pickers, messages, and the worker plumbing.

Why here: the deblur, overlay and fine-tune docks all need "pick a layer", "pick a model", "tell the
user what went wrong without a traceback" and "run a long job off the GUI thread with progress and a
Cancel button". Each dock only describes its job as a plain function ``job(progress, cancel)``.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, DGNOError, InputError

log = logging.getLogger(__name__)

LOAD_CHECKPOINT = "Load checkpoint…"
CHECKPOINT_FILTER = "napari-dgno checkpoints (*.json *.safetensors)"
POLL_S = 0.05


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
            f"choose an image layer to {what} (open an image, or File > Open Sample > napari-dgno)"
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


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers of ``types``, kept in sync with the layer list.

    It follows the viewer's active layer when that layer is of a listed type, which is what users
    expect after opening a file or a sample, but not onto layers napari-dgno itself just added (a
    second Run should not silently switch to the previous result). Layers for which ``exclude``
    returns True are not offered at all (e.g. overlay mosaics as overlay inputs). A second picker in
    the same dock (e.g. the sharp half of a pair) passes ``follow_active=False``, or both would
    always show the same layer.
    """

    def __init__(
        self,
        viewer,
        types: Sequence[type],
        parent: QWidget | None = None,
        exclude: Callable[[Any], bool] | None = None,
        follow_active: bool = True,
    ):
        super().__init__(parent)
        self.viewer = viewer
        self.types = tuple(types)
        self.exclude = exclude
        self.setToolTip("The layer to work on")
        events = viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(events, name).connect(self._refresh)
        self._refresh()
        if follow_active:
            viewer.layers.selection.events.active.connect(self._follow_active)
            self._follow_active()

    def _accepts(self, layer) -> bool:
        return isinstance(layer, self.types) and not (self.exclude is not None and self.exclude(layer))

    def _layers(self) -> list:
        return [layer for layer in self.viewer.layers if self._accepts(layer)]

    def _refresh(self, event=None) -> None:
        current = self.layer()
        self.blockSignals(True)
        self.clear()
        for layer in self._layers():
            self.addItem(layer.name, layer)
            # names change: keep the label in sync
            layer.events.name.connect(self._rename)
        if current is not None:
            self.set_layer(current)
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def _rename(self, event=None) -> None:
        for i in range(self.count()):
            layer = self.itemData(i)
            if layer is not None and self.itemText(i) != layer.name:
                self.setItemText(i, layer.name)

    def _follow_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and self._accepts(active) and not is_output_layer(active):
            self.set_layer(active)

    def layer(self):
        return self.currentData() if self.count() else None

    def set_layer(self, layer) -> None:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                self.setCurrentIndex(i)
                return


# --------------------------------------------------------------------------------------------------
# Models


class _ModelListEvents(QObject):
    changed = Signal()


_MODEL_LIST_EVENTS: _ModelListEvents | None = None


def model_list_events() -> _ModelListEvents:
    """One app-wide ``changed`` signal that every :class:`ModelPicker` refreshes on.

    Why: a model saved by the fine-tune dock must show up at once in every open Deblur/overlay
    dock, without the user pressing ↻. A Qt signal (not a plain callback list) disconnects itself
    when a picker is deleted.
    """
    global _MODEL_LIST_EVENTS
    if _MODEL_LIST_EVENTS is None:
        _MODEL_LIST_EVENTS = _ModelListEvents()
    return _MODEL_LIST_EVENTS


def models_changed() -> None:
    """Tell every open model picker to re-read ``list_models()`` (call on the GUI thread)."""
    model_list_events().changed.emit()


def model_label(entry: dict) -> str:
    """``"name — face @ 16 px (shipped, default)"``: the list shows what each model was trained at."""
    tags = [entry.get("source", "")]
    if entry.get("default"):
        tags.append("default")
    trained = trained_label(entry)
    return f"{entry['name']} — {trained} ({', '.join(t for t in tags if t)})"


def trained_label(entry: dict) -> str:
    flux, e = entry.get("flux"), entry.get("element_size")
    if flux is None and e is None:
        return entry.get("architecture", "?")
    size = "global" if e == 0 else f"{e} px"
    return f"{flux} @ {size}"


class ModelPicker(QWidget):
    """Shipped and user models (from ``list_models()``), any checkpoint file, or a model object.

    ``value()`` is what ``deblur``/``load_model`` accept: a name, a path, or a loaded model. Each entry
    keeps its ``list_models()`` record, so docks can show what the model was trained at.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setToolTip(
            "Shipped models, your fine-tuned models (found automatically), or any checkpoint file"
        )
        self.refresh_button = QPushButton("↻", self)
        self.refresh_button.setToolTip("Look for new models (e.g. after fine-tuning)")
        self.refresh_button.setFixedWidth(28)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        self._extra: list[tuple[str, Any, dict]] = []  # checkpoints/objects added by hand
        self._last_index = 0
        self.combo.activated.connect(self._on_activated)
        self.combo.currentIndexChanged.connect(self._on_index)
        self.refresh_button.clicked.connect(self.refresh)
        model_list_events().changed.connect(self.refresh)
        self.refresh()

    # -- listing
    def refresh(self) -> None:
        from ..registry import list_models

        current = self.value()
        try:
            entries = list_models()
        except DGNOError as err:
            notify(describe_error(err))
            entries = []
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in entries:
            if "error" in entry:
                self.combo.addItem(f"{entry['name']} (unreadable)", None)
                index = self.combo.count() - 1
                self.combo.model().item(index).setEnabled(False)
                self.combo.setItemData(index, entry["error"], Qt.ItemDataRole.ToolTipRole)
                continue
            self.combo.addItem(model_label(entry), (entry["path"], entry))
            self.combo.setItemData(self.combo.count() - 1, entry["path"], Qt.ItemDataRole.ToolTipRole)
        for label, value, entry in self._extra:
            self.combo.addItem(label, (value, entry))
        if not self.entries():
            self.combo.addItem("no models found: load a checkpoint…", None)
            self.combo.model().item(self.combo.count() - 1).setEnabled(False)
        self.combo.addItem(LOAD_CHECKPOINT, LOAD_CHECKPOINT)
        self.combo.blockSignals(False)
        self._select(current)

    def entries(self) -> list[dict]:
        """The ``list_models()``-style records of every selectable model."""
        out = []
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if isinstance(data, tuple):
                out.append(data[1])
        return out

    def _select(self, value) -> None:
        start = None
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if not isinstance(data, tuple):
                continue
            if start is None:
                start = i
            if value is not None and (data[0] is value or data[0] == value):
                start = i
                break
            if value is None and data[1].get("default"):
                start = i
        self.combo.setCurrentIndex(start if start is not None else -1)
        self._last_index = self.combo.currentIndex()
        self.changed.emit()

    # -- choosing
    def _on_index(self, index: int) -> None:
        if self.combo.itemData(index) == LOAD_CHECKPOINT:
            return
        self._last_index = index
        self.changed.emit()

    def _on_activated(self, index: int) -> None:
        if self.combo.itemData(index) != LOAD_CHECKPOINT:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load a napari-dgno checkpoint", "", CHECKPOINT_FILTER)
        if path:
            self.add_checkpoint(path)
        else:
            self.combo.setCurrentIndex(self._last_index)

    def add_checkpoint(self, path) -> None:
        """Add a checkpoint file (read its JSON only) and select it."""
        from ..io.checkpoint import checkpoint_paths, read_metadata

        try:
            meta = read_metadata(path)
        except DGNOError as err:
            notify(describe_error(err))
            self.combo.setCurrentIndex(self._last_index)
            return
        weights = str(checkpoint_paths(path)[0])
        entry = {
            "name": meta.get("name") or Path(weights).stem,
            "source": "file",
            "path": weights,
            "architecture": meta.get("architecture"),
            "flux": meta.get("flux", meta.get("config", {}).get("flux")),
            "element_size": meta.get("element_size", meta.get("config", {}).get("element_size")),
        }
        self._add_extra(f"{entry['name']} — {trained_label(entry)} (file)", weights, entry)

    def add_model(self, model, label: str | None = None) -> None:
        """Add an already loaded model (``DeblurModel`` or network), e.g. from a script or a test."""
        net = getattr(model, "net", model)
        config = getattr(net, "config", None)
        meta = getattr(model, "meta", {}) or {}
        entry = {
            "name": label or getattr(model, "name", type(net).__name__),
            "source": "session",
            "path": None,
            "architecture": meta.get("architecture", "dgno"),
            "flux": meta.get("flux", getattr(config, "flux", None)),
            "element_size": meta.get("element_size", getattr(config, "element_size", None)),
        }
        self._add_extra(f"{entry['name']} — {trained_label(entry)} (session)", model, entry)

    def _add_extra(self, label: str, value, entry: dict) -> None:
        self._extra = [x for x in self._extra if x[1] is not value and x[1] != value]
        self._extra.append((label, value, entry))
        self.refresh()
        self._select(value)

    def select(self, name_or_value) -> bool:
        """Select a model by its name, its path, or the object added with :meth:`add_model`."""
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if isinstance(data, tuple) and (
                data[0] is name_or_value
                or (isinstance(name_or_value, (str, Path)) and str(data[0]) == str(name_or_value))
                or data[1].get("name") == name_or_value
            ):
                self.combo.setCurrentIndex(i)
                return True
        return False

    def value(self):
        data = self.combo.currentData() if self.combo.count() else None
        return data[0] if isinstance(data, tuple) else None

    def entry(self) -> dict | None:
        data = self.combo.currentData() if self.combo.count() else None
        return data[1] if isinstance(data, tuple) else None

    def name(self) -> str:
        entry = self.entry()
        return entry["name"] if entry else ""


def load_chosen_model(value, device):
    """What a picker holds -> a loaded ``DeblurModel`` (runs in the worker: reading weights takes time)."""
    from ..registry import DeblurModel, load_model

    if value is None:
        raise InputError("choose a model (or load a checkpoint file)")
    if isinstance(value, DeblurModel):
        return value
    if not isinstance(value, (str, Path)):  # a bare network: the engine wraps it
        return value
    return load_model(value, device)


class DeviceCombo(QComboBox):
    """auto / cpu / each GPU found, with what was detected in the tooltip."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from ..devices import available_devices, resolve_device

        devices = available_devices()
        auto = str(resolve_device("auto"))
        self.addItem(f"auto ({auto})", "auto")
        for device_id, description in devices:
            self.addItem(description, device_id)
        self.detected = ", ".join(d for _, d in devices)
        self.setToolTip(f"Detected: {self.detected}")

    def value(self) -> str:
        return self.currentData() or "auto"


class AutoSpinBox(QSpinBox):
    """A pixel count where the lowest value means "auto" (the engine then decides)."""

    def __init__(self, minimum: int, maximum: int, step: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setRange(minimum, maximum)
        self.setSingleStep(step)
        self.setSpecialValueText("auto")
        self.setSuffix(" px")
        self.setValue(minimum)

    def auto_value(self):
        return "auto" if self.value() == self.minimum() else int(self.value())


# --------------------------------------------------------------------------------------------------
# Running jobs off the GUI thread


class JobHandle(QObject):
    """One running job: Qt signals on the GUI thread, a thread-safe ``cancel()``."""

    progressed = Signal(int, int)  # done, total
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


def _job_generator(job: Callable, handle: JobHandle):
    """Runs ``job(progress, cancel)`` in a helper thread and yields its progress from the worker.

    Library functions report progress through callbacks, which cannot ``yield``; a queue turns the
    callbacks into the generator's yields, so napari's worker stays the one place that talks to Qt.
    """
    updates: queue.SimpleQueue = queue.SimpleQueue()
    box: dict = {}

    def target():
        try:
            box["result"] = job(
                lambda done, total: updates.put((int(done), int(total))), handle._cancel.is_set
            )
        except BaseException as exc:  # handed to the GUI thread below
            box["error"] = exc
            box["traceback"] = traceback.format_exc()

    thread = threading.Thread(target=target, name=f"napari-dgno {handle.description}", daemon=True)
    thread.start()
    while True:
        thread.join(POLL_S)
        last = None
        while True:
            try:
                last = updates.get_nowait()
            except queue.Empty:
                break
        if last is not None:
            yield last
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


def start_job(job: Callable, description: str, *, activity: bool = True) -> JobHandle:
    """Start ``job(progress, cancel) -> result`` in a napari ``thread_worker``; return its handle.

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
        done, total = value
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

    worker = create_worker(_job_generator, job, handle, _start_thread=False)
    worker.yielded.connect(on_yield)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    handle.worker = worker
    _RUNNING.add(handle)  # keep the handle alive until the worker is done
    worker.start()
    return handle


_RUNNING: set[JobHandle] = set()


class RunPanel(QWidget):
    """One Run button that becomes Cancel while working, progress bars and a status line.

    The dock connects ``run_requested`` to a method that starts a job and passes the handle to
    :meth:`attach`. With ``planes > 1`` the job's ``progress(done, total)`` (total = tiles per plane
    × planes, as the engine counts) drives two bars: tiles of the current plane, and planes.
    """

    run_requested = Signal()

    def __init__(self, run_text: str = "Run", parent: QWidget | None = None):
        super().__init__(parent)
        self.run_text = run_text
        self.button = QPushButton(run_text, self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("%v / %m")
        self.plane_bar = QProgressBar(self)
        self.plane_bar.setFormat("plane %v / %m")
        self.plane_bar.hide()
        self.detail = QLabel("", self)  # "plane 2/5 · tile 3/4"
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.button)
        box.addWidget(self.bar)
        box.addWidget(self.plane_bar)
        box.addWidget(self.detail)
        box.addWidget(self.status)
        self.handle: JobHandle | None = None
        self.planes = 1
        self.unit = "step"
        self.button.clicked.connect(self._clicked)

    @property
    def busy(self) -> bool:
        return self.handle is not None

    def _clicked(self) -> None:
        if self.handle is not None:
            self.cancel()
        else:
            self.run_requested.emit()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.button.setEnabled(False)
            self.button.setText("Cancelling…")

    def start(
        self,
        job: Callable,
        description: str,
        on_success: Callable,
        planes: int = 1,
        unit: str | None = "tile",
    ) -> JobHandle:
        """Run ``job`` in a worker shown by this panel: a result goes to ``on_success``, a failure is
        reported here and as a notification, and a cancelled run adds nothing."""
        handle = start_job(job, description)
        self.attach(handle, planes=planes, unit=unit)
        handle.succeeded.connect(on_success)
        handle.failed.connect(lambda exc: report_failure(self, exc))
        handle.cancelled.connect(lambda: self.show_message("cancelled; nothing was added", "warning"))
        return handle

    def attach(self, handle: JobHandle, planes: int = 1, unit: str | None = "tile") -> None:
        """Show ``handle``'s progress; ``unit`` names what ``progress`` counts (None: a percentage)."""
        self.handle = handle
        self.planes = max(int(planes), 1)
        self.unit = unit
        self.button.setText("Cancel")
        self.button.setEnabled(True)
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.bar.setFormat("%p%" if unit is None else "%v / %m")
        self.plane_bar.setVisible(self.planes > 1)
        self.plane_bar.setRange(0, self.planes)
        self.plane_bar.setValue(0)
        self.detail.setText("")
        self.show_message(f"{handle.description}…")
        handle.progressed.connect(self._progress)
        handle.finished.connect(self._finished)

    def _progress(self, done: int, total: int) -> None:
        if self.planes > 1 and total >= self.planes:
            per_plane = max(total // self.planes, 1)
            plane = min((max(done, 1) - 1) // per_plane + 1, self.planes)
            within = done - (plane - 1) * per_plane
            self.bar.setRange(0, per_plane)
            self.bar.setValue(within)
            self.plane_bar.setValue(plane if within == per_plane else plane - 1)
            self.detail.setText(f"plane {plane}/{self.planes} · {self.unit} {within}/{per_plane}")
        else:
            self.bar.setRange(0, max(total, 1))
            self.bar.setValue(done)
            self.detail.setText("" if self.unit is None else f"{self.unit} {done}/{total}")

    def _finished(self) -> None:
        self.handle = None
        self.button.setText(self.run_text)
        self.button.setEnabled(True)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)

    def show_message(self, text: str, level: str = "info") -> None:
        color = {"info": "", "warning": "color: #e0a040;", "error": "color: #e05050;"}[level]
        self.status.setStyleSheet(color)
        self.status.setText(text)


def report_failure(panel: RunPanel | None, exc: BaseException) -> str:
    """Show a failure in the dock and as a napari notification; our own errors are warnings."""
    message = describe_error(exc)
    level = "warning" if isinstance(exc, DGNOError) else "error"
    if panel is not None:
        panel.show_message(message, level)
    notify(message, level)
    return message
