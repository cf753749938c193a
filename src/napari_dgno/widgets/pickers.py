"""The choosers every dock shows: a layer, a model (shipped, user, or a checkpoint file), a device,
and spin boxes with an "auto" value."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from ..devices import available_devices, default_threads, resolve_device
from ..errors import DGNOError, InputError
from ..io.checkpoint import checkpoint_paths, read_metadata
from ..registry import DeblurModel, list_models, load_model
from .layers import is_output_layer
from .messages import describe_error, notify

log = logging.getLogger(__name__)

LOAD_CHECKPOINT = "Load checkpoint…"
CHECKPOINT_FILTER = "napari-dgno checkpoints (*.json *.safetensors)"


def _unwrapped(obj):
    """The object behind napari's ``PublicOnlyProxy`` (what plugin docks get), or ``obj`` itself."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a, b) -> bool:
    """Identity of two layers, seen through proxies: napari hands a plugin's viewer (and each layer
    reached through it) as a new proxy object per access, so ``a is b`` is false for the same layer."""
    return a is not None and b is not None and _unwrapped(a) is _unwrapped(b)


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers of ``types``, kept in sync with the layer list.

    It follows the viewer's active layer when that layer is of a listed type, which is what users
    expect after opening a file or a sample, but not onto layers napari-dgno itself just added (a
    second Run should not silently switch to the previous result), and not once the user has picked
    a layer in the combo box by hand (until that layer is removed). Layers for which ``exclude``
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
        follow_if: Callable[[Any], bool] | None = None,
    ):
        super().__init__(parent)
        self.viewer = viewer
        self.types = tuple(types)
        self.exclude = exclude
        self.follow_if = follow_if  # follow the active layer only when it passes (e.g. stacks only)
        self.setToolTip("The layer to work on")
        compact(self)
        events = viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(events, name).connect(self._refresh)
        self._hand_picked = None  # the layer the user chose in this combo box, if any
        self._refresh()
        self.activated.connect(self._chosen)  # only user interaction emits ``activated``
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
            self.setItemData(self.count() - 1, layer.name, Qt.ItemDataRole.ToolTipRole)
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

    def _chosen(self, index: int) -> None:
        self._hand_picked = self.itemData(index)

    def chosen_by_hand(self) -> bool:
        """True while the layer the user picked in this combo box is still in the viewer."""
        if self._hand_picked is None:
            return False
        if any(same_layer(self._hand_picked, self.itemData(i)) for i in range(self.count())):
            return True
        self._hand_picked = None
        return False

    def layers(self) -> list:
        """The layers offered, in the layer list's order."""
        return [self.itemData(i) for i in range(self.count())]

    def _follow_active(self, event=None) -> None:
        if self._hand_picked is not None:
            if any(same_layer(self._hand_picked, self.itemData(i)) for i in range(self.count())):
                return  # the user picked a layer in this dock: keep it until it goes away
            self._hand_picked = None
        active = self.viewer.layers.selection.active
        if active is None or not self._accepts(active) or is_output_layer(active):
            return
        if self.follow_if is None or self.follow_if(active):
            self.set_layer(active)

    def layer(self):
        return self.currentData() if self.count() else None

    def set_layer(self, layer) -> None:
        for i in range(self.count()):
            if same_layer(self.itemData(i), layer):
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
        compact(self.combo)
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

        compact(self, 10)
        devices = available_devices()
        auto = str(resolve_device("auto"))
        self.addItem(f"auto ({auto})", "auto")
        for device_id, description in devices:
            self.addItem(description, device_id)
        self.detected = ", ".join(d for _, d in devices)
        self.setToolTip(f"Detected: {self.detected}")

    def value(self) -> str:
        return self.currentData() or "auto"


class ThreadsSpin(QSpinBox):
    """CPU threads for a run: "auto" (``$NAPARI_DGNO_THREADS``, else torch's setting) or a number.

    Why a choice: on a machine where something else runs, fewer threads are often much faster (and
    Stop quicker) than as many threads as cores."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setRange(0, max(os.cpu_count() or 1, 1))
        self.setSpecialValueText(f"auto ({default_threads()})")
        self.setValue(0)
        self.setToolTip(
            "CPU threads (auto: $NAPARI_DGNO_THREADS if set, else torch's setting, normally all cores); "
            "fewer is often faster when other programs are busy"
        )

    def value_or_none(self) -> int | None:
        """None for auto, else the number chosen."""
        return None if self.value() == 0 else int(self.value())


def compact(combo: QComboBox, characters: int = 14) -> None:
    """Keep a combo box narrow whatever its entries (long names are elided; the tooltip has them):
    without it, one long file name makes a dock half the window wide."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)


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


class FolderEdit(QWidget):
    """A path field with a "…" button that opens a folder chooser."""

    def __init__(self, caption: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.caption = caption
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText("choose a folder…")
        self.button = QPushButton("…", self)
        self.button.setFixedWidth(28)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)
        self.button.clicked.connect(self._browse)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.caption, self.edit.text())
        if path:
            self.edit.setText(path)

    def path(self) -> str:
        return self.edit.text().strip()
