"""The Deblur dock and the Layers > Filter menu command.

Both only gather choices and call :func:`napari_dgno.deblur` (the engine normalises, tiles and walks
the planes); the dock runs it in a worker so the viewer stays responsive, and the result always goes
into a *new* layer that sits exactly on the input (same scale, translate, units and axis labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..errors import DGNOError, InputError
from ..inference import engine
from ..model import FLUX_VARIANTS
from ..options import DeblurOptions
from ..registry import default_model_name, list_models
from .jobs import JobHandle, cancellable_network
from .layers import check_image_layer, spatial_kwargs
from .messages import describe_error, notify
from .pickers import (
    AutoSpinBox,
    DeviceCombo,
    LayerPicker,
    ModelPicker,
    ThreadsSpin,
    load_chosen_model,
    trained_label,
)
from .run_panel import RunPanel, report_failure, scrolled

if TYPE_CHECKING:
    import napari

METADATA_KEY = "napari_dgno"
FLUX_HELP = {
    "face": "face-based numerical flux (the paper's best)",
    "p0dg": "flux from neighbouring elements' operators (P0DG)",
    "none": "no flux: elements do not talk (may show blocking)",
}


def output_name(layer_name: str) -> str:
    return f"{layer_name} deblurred"


def snapshot_layer(layer) -> dict:
    """What the output copies from the input, taken when the run starts (the input may change or
    be deleted while the worker runs; the output still lands where the input was)."""
    return {
        "name": layer.name,
        "spatial": spatial_kwargs(layer),
        "colormap": getattr(layer.colormap, "name", "gray"),
        "blending": layer.blending,
    }


def output_layer_tuple(source: dict, result: np.ndarray, info: dict, requested: dict | None = None):
    """The ``(data, kwargs, "image")`` LayerDataTuple of a deblurred layer, settings in its metadata."""
    settings = {
        "model": info.get("model"),
        "model_path": info.get("model_path"),
        "element_size": info.get("element_size"),
        "flux": info.get("flux"),
        "device": info.get("device"),
        "tile": info.get("tile"),
        "overlap": info.get("overlap"),
        "self_ensemble": bool(info.get("self_ensemble", False)),
        "tiles_per_plane": info.get("tiles_per_plane"),
        "planes": info.get("planes"),
        "normalization": info.get("normalization"),
        "seconds": round(float(info.get("seconds", 0.0)), 3),
        "source_layer": source["name"],
        "version": __version__,
    }
    if requested:
        settings["requested"] = dict(requested)
    kwargs = {
        "name": output_name(source["name"]),
        "metadata": {METADATA_KEY: settings},
        "colormap": source["colormap"],
        "blending": source["blending"],
        **source["spatial"],
    }
    return (result, kwargs, "image")


def deblur_layer(
    layer: napari.layers.Layer,
    model=None,
    element_size: int | None = None,
    flux: str | None = None,
    device: str = "auto",
    tile="auto",
    overlap="auto",
    progress=None,
    cancel=None,
    self_ensemble: bool = False,
) -> napari.types.LayerDataTuple:
    """Deblur an image layer; returns the new layer as a LayerDataTuple (the input is not touched).

    Scriptable: ``data, kwargs, _ = deblur_layer(viewer.layers["img"], "my-model")`` then
    ``viewer.add_image(data, **kwargs)``.
    Bad layers raise :class:`~napari_dgno.errors.InputError` with a one-line reason.
    """

    check_image_layer(layer, element_size or None)
    source = snapshot_layer(layer)
    options = DeblurOptions(
        element_size=element_size,
        flux=flux,
        device=device,
        tile=tile,
        overlap=overlap,
        self_ensemble=self_ensemble,
    )
    result, report = engine.restore(layer.data, model, options, progress=progress, cancel=cancel)
    return output_layer_tuple(source, result, report.to_dict(), _requested(options))


def _requested(options: DeblurOptions) -> dict:
    """The options as the user set them, for the output layer's metadata."""
    keys = ("element_size", "flux", "device", "tile", "overlap", "self_ensemble", "threads")
    return {k: getattr(options, k) for k in keys}


def default_model():
    """The shipped default model; without one, the first of the user's own models (e.g. fine-tuned);
    None lets the engine explain that no model is installed."""

    if default_model_name() is not None:
        return None
    usable = [e for e in list_models() if "error" not in e]
    return usable[0]["path"] if usable else None


def deblur_layer_command(viewer: napari.Viewer, layer: napari.layers.Layer) -> None:
    """Layers > Filter > "Deblur defocus": the default model, in a background worker.

    The new layer is added when the worker returns; the activity dock shows it running. A bad
    choice or a failure is a notification, never a traceback. (napari 0.9's processor for a returned
    ``FunctionWorker[LayerDataTuple]`` is broken, so the command adds the layer itself.)
    """
    from napari.qt.threading import create_worker

    try:
        check_image_layer(layer)
    except DGNOError as err:
        notify(describe_error(err))
        return None
    worker = create_worker(
        deblur_layer,
        layer,
        default_model(),
        _start_thread=False,
        _progress={"desc": "napari-dgno: deblurring"},
    )
    worker.returned.connect(lambda result: viewer.add_image(result[0], **result[1]))
    worker.errored.connect(lambda exc: notify(describe_error(exc), "warning"))
    worker.start()
    return None


# napari injects arguments by annotation *type*; string annotations (``from __future__``) would not
# resolve, so the command gets real ones.
def _annotate_command() -> None:
    try:
        import napari
    except ImportError:  # pragma: no cover - napari missing: the library still imports
        return
    deblur_layer_command.__annotations__ = {
        "viewer": napari.viewer.Viewer,
        "layer": napari.layers.Layer,
        "return": None,
    }


_annotate_command()


class DeblurWidget(QWidget):
    """Dock: pick a layer and a model, choose element size / flux / device / tiling / ensemble, Run."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        from napari.layers import Image

        self.viewer = napari_viewer
        self.layer_picker = LayerPicker(napari_viewer, (Image,), self)
        self.model_picker = ModelPicker(self)

        self.element_size = QSpinBox(self)
        self.element_size.setRange(0, 512)
        self.element_size.setSingleStep(4)
        self.element_size.setSuffix(" px")
        self.element_size.setSpecialValueText("global (one element)")
        self.element_size.setToolTip(
            "Granularity of the blur model: DGNO learns one local operator per element of this size"
        )
        self.flux = QComboBox(self)
        for name in FLUX_VARIANTS:
            self.flux.addItem(name, name)
        self.trained = QLabel("", self)
        self.trained.setWordWrap(True)

        self.device = DeviceCombo(self)
        self.threads = ThreadsSpin(self)
        self.tile = AutoSpinBox(0, 16384, 64, self)
        self.tile.setToolTip("Tile side for large images (auto: whole plane when it fits)")
        self.overlap = AutoSpinBox(-1, 4096, 8, self)
        self.overlap.setToolTip("Overlap between tiles, blended smoothly (auto: ~1/8 of the tile)")
        self.self_ensemble = QCheckBox("8 orientations, ~8x slower", self)
        self.self_ensemble.setChecked(False)
        self.self_ensemble.setToolTip(
            "Restore every tile in its 4 rotations and their mirror images and average the results "
            "(mapped back): evens out orientation-dependent errors and the element grid's placement. "
            "About 8x the time, same memory; typically about +0.1 dB PSNR"
        )

        self.panel = RunPanel("Deblur", self)

        form = QFormLayout()
        form.addRow("image", self.layer_picker)
        form.addRow("model", self.model_picker)
        form.addRow("element size", self.element_size)
        form.addRow("flux", self.flux)
        form.addRow("", self.trained)
        form.addRow("device", self.device)
        form.addRow("CPU threads", self.threads)
        form.addRow("tile", self.tile)
        form.addRow("overlap", self.overlap)
        form.addRow("self-ensemble", self.self_ensemble)
        content = QWidget(self)
        box = QVBoxLayout(content)
        box.addLayout(form)
        box.addWidget(self.panel)
        box.addStretch(1)
        scrolled(self, content)

        self.model_picker.changed.connect(self._model_changed)
        self.element_size.valueChanged.connect(self._update_trained)
        self.flux.currentIndexChanged.connect(self._update_trained)
        self.panel.run_requested.connect(self.run)
        self._model_changed()

    # -- model / settings display
    def _model_changed(self) -> None:
        entry = self.model_picker.entry()
        if entry is not None:
            if isinstance(entry.get("element_size"), int):
                self.element_size.setValue(entry["element_size"])
            if entry.get("flux") in FLUX_VARIANTS:
                self.flux.setCurrentIndex(FLUX_VARIANTS.index(entry["flux"]))
        self._update_trained()

    def _trained_combos(self) -> dict[tuple[str, int], list[str]]:
        combos: dict[tuple[str, int], list[str]] = {}
        for entry in self.model_picker.entries():
            if entry.get("flux") is not None and entry.get("element_size") is not None:
                combos.setdefault((entry["flux"], entry["element_size"]), []).append(entry["name"])
        return combos

    def _update_trained(self) -> None:
        """Say what the chosen model was trained at, and mark (✓) fluxes with weights at this size."""
        combos = self._trained_combos()
        e = self.element_size.value()
        for i, name in enumerate(FLUX_VARIANTS):
            mark = " ✓" if (name, e) in combos else ""
            self.flux.setItemText(i, f"{name}{mark}")
            self.flux.setItemData(
                i, FLUX_HELP[name] + (" (trained weights exist)" if mark else ""), Qt.ItemDataRole.ToolTipRole
            )
        entry = self.model_picker.entry()
        if entry is None:
            self.trained.setText("no model chosen")
            return
        text = f"trained: {trained_label(entry)}"
        if (self.flux.currentData(), e) != (entry.get("flux"), entry.get("element_size")):
            others = combos.get((self.flux.currentData(), e), [])
            text += " — not trained at this setting"
            text += f" (trained models: {', '.join(others)})" if others else " (results may degrade)"
        self.trained.setText(text)

    # -- running
    @property
    def busy(self) -> bool:
        return self.panel.busy

    def settings(self) -> dict:
        return {
            "model": self.model_picker.value(),
            "element_size": int(self.element_size.value()),
            "flux": self.flux.currentData(),
            "device": self.device.value(),
            "tile": self.tile.auto_value(),
            "overlap": self.overlap.auto_value(),
            "self_ensemble": self.self_ensemble.isChecked(),
            "threads": self.threads.value_or_none(),
        }

    def run(self) -> JobHandle | None:
        """Start deblurring the chosen layer; returns the job (None when a choice is bad)."""
        if self.busy:
            return None
        layer = self.layer_picker.layer()
        s = self.settings()
        try:
            check_image_layer(layer, s["element_size"] or None)
            if s["model"] is None:
                raise InputError("choose a model (or load a checkpoint file)")
        except DGNOError as err:
            report_failure(self.panel, err)
            return None

        data = layer.data  # a reference: the engine reads it and never writes to it
        source = snapshot_layer(layer)
        planes = int(np.prod(data.shape[:-2], dtype=np.int64)) if data.ndim > 2 else 1
        # One frozen options object, built here on the GUI thread and handed to the worker.
        options = DeblurOptions(**{k: v for k, v in s.items() if k != "model"})

        def job(progress, cancel):
            model = load_chosen_model(s["model"], s["device"])
            with cancellable_network(model, cancel):
                out, report = engine.restore(data, model, options, progress=progress, cancel=cancel)
            return output_layer_tuple(source, out, report.to_dict(), _requested(options))

        return self.panel.start(job, f"deblurring {layer.name}", self._add_result, planes=planes)

    def cancel(self) -> None:
        self.panel.cancel()

    def _add_result(self, layer_tuple) -> None:
        data, kwargs, _ = layer_tuple
        layer = self.viewer.add_image(data, **kwargs)
        info = kwargs["metadata"][METADATA_KEY]
        self.panel.show_message(
            f"added '{layer.name}' ({info['model']}, {info['flux']} @ {info['element_size']} px, "
            f"{info['device']}{', ×8 self-ensemble' if info.get('self_ensemble') else ''}, "
            f"{info['seconds']:.1f} s)"
        )

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.cancel()
        super().closeEvent(event)
