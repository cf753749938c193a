"""The Kernel / PSF overlay dock: per element, what the network does and which blur it undoes.

The numbers come from :mod:`napari_dgno.overlays`; this module only turns them into layers that sit
exactly on the element grid of the chosen image (see ``overlays.mosaic_transform``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..errors import DGNOError, InputError
from ..model import FLUX_VARIANTS
from ..overlays import (
    OVERLAY_SMOOTH,
    ElementGrid,
    ElementOverlays,
    compute_overlays,
    element_map,
    element_rectangles,
    mosaic,
    mosaic_transform,
    normalize_for_display,
)
from ..physics.fit import default_z_grid
from .jobs import JobHandle, cancellable_network
from .layers import check_image_layer, current_plane_index, is_output_layer
from .pickers import AutoSpinBox, DeviceCombo, LayerPicker, ModelPicker, load_chosen_model, trained_label
from .run_panel import RunPanel, report_failure, scrolled

if TYPE_CHECKING:
    import napari

METADATA_KEY = "napari_dgno_overlay"
PARTS = ("kernels", "psfs", "grid", "defocus")
KERNEL_CONTRAST = 0.3  # display range of peak-normalised kernels
MOSAIC_OPACITY = 0.7  # kernel/PSF mosaics are added over the image (additive): it stays visible
MAX_TEXT_ELEMENTS = 2000  # above this, per-element text costs more to draw than it tells (hover shows it)
MIN_CONFIDENCE = 0.1  # below: too little signal to pin a PSF; the element is greyed out
LOW_CONFIDENCE_FACE = (0.45, 0.45, 0.45, 0.55)  # grey veil over elements without a reliable fit


def _edge_colormap():
    """Light grey (in focus) → yellow → red (most defocused): readable on a dark canvas, where the
    usual sequential maps start near black and in-focus elements would vanish."""
    from napari.utils.colormaps import Colormap

    colors = [[0.8, 0.8, 0.8, 1.0], [1.0, 0.85, 0.0, 1.0], [1.0, 0.15, 0.0, 1.0]]
    return Colormap(colors, name="napari-dgno defocus")


def _plane_suffix(plane: tuple[int, ...]) -> str:
    return f" [plane {', '.join(str(i) for i in plane)}]" if plane else ""


def overlay_layer_tuples(
    result: ElementOverlays,
    source: dict,
    plane: tuple[int, ...] = (),
    parts=PARTS,
    settings: dict | None = None,
) -> list[tuple]:
    """LayerDataTuples for the overlay of one plane of ``source`` (``name``, ``scale``, ``translate``,
    optional ``units``/``axis_labels``; only the last two axes are used).

    * ``kernels``/``psfs``: k×k tiles per element, each normalised to its peak, as one mosaic image
      whose pixels are ``E / k`` image pixels wide and aligned so tile (i, j) covers element (i, j);
    * ``grid``: one rectangle per element with the per-element features, edges coloured by defocus,
      elements whose fit has too little signal (confidence < ``MIN_CONFIDENCE``) greyed out;
    * ``defocus``: one value (µm) per element, each covering its element.

    Mosaics are semi-transparent over the image; a partial last row/column of elements is drawn at
    its true size.
    """
    e, k = result.element_size, result.kernel_size
    scale = tuple(float(v) for v in source["scale"][-2:])
    translate = tuple(float(v) for v in source["translate"][-2:])
    base = source["name"] + _plane_suffix(plane)
    common: dict = {}
    for key in ("units", "axis_labels"):
        if source.get(key) is not None:
            common[key] = tuple(source[key])[-2:]
    meta = {
        METADATA_KEY: {
            **(settings or {}),
            **result.settings,
            "source_layer": source["name"],
            "plane": list(plane),
            "version": __version__,
        }
    }
    rows, cols = result.grid_shape
    shape = (int(source["shape"][-2]), int(source["shape"][-1]))
    grid = ElementGrid(shape, e)
    if (grid.rows, grid.cols) != (rows, cols):
        raise ValueError(f"overlay grid {rows}x{cols} does not match the layer's {grid.rows}x{grid.cols}")
    confidence = result.features()["confidence"].reshape(rows, cols)
    confident = confidence >= MIN_CONFIDENCE
    top = float(max(np.nanmax(result.defocus_um), 1e-3))
    out = []
    m_scale, m_translate = mosaic_transform(scale, translate, e, k)
    mosaic_style = {
        "scale": m_scale,
        "translate": m_translate,
        "blending": "additive",
        "opacity": MOSAIC_OPACITY,
    }
    if "kernels" in parts:
        out.append(
            (
                mosaic(normalize_for_display(result.kernels), shape, e),
                {
                    "name": f"{base} kernels",
                    # dark at 0: the faint spread and negative rings glow (red > 0, blue < 0);
                    # the peak (1) saturates on purpose
                    "colormap": "twilight",
                    "contrast_limits": (-KERNEL_CONTRAST, KERNEL_CONTRAST),
                    "metadata": meta,
                    **mosaic_style,
                    **common,
                },
                "image",
            )
        )
    if "psfs" in parts:
        out.append(
            (
                mosaic(normalize_for_display(result.psfs), shape, e),
                {
                    "name": f"{base} PSFs",
                    "colormap": "inferno",
                    "contrast_limits": (0.0, 1.0),
                    "visible": "kernels" not in parts,
                    "metadata": meta,
                    **mosaic_style,
                    **common,
                },
                "image",
            )
        )
    if "defocus" in parts:
        values, factor = element_map(result.defocus_um.astype(np.float32), shape, e)
        d_scale, d_translate = mosaic_transform(scale, translate, e, factor)
        out.append(
            (
                values,
                {
                    "name": f"{base} fitted defocus (µm)",
                    "scale": d_scale,
                    "translate": d_translate,
                    "colormap": "viridis",
                    "contrast_limits": (0.0, top),
                    "opacity": 0.5,
                    "visible": False,
                    "metadata": meta,
                    **common,
                },
                "image",
            )
        )
    if "grid" in parts:
        features = result.features()
        features["label"] = np.array(
            [
                f"{z:.1f}" if ok else ""
                for z, ok in zip(features["defocus_um"], confident.ravel(), strict=True)
            ]
        )
        edges = _edge_colormap().map(np.clip(features["defocus_um"] / top, 0.0, 1.0))
        edges[~confident.ravel()] = (0.5, 0.5, 0.5, 1.0)
        faces = np.zeros((rows * cols, 4), dtype=np.float32)
        faces[~confident.ravel()] = LOW_CONFIDENCE_FACE
        out.append(
            (
                element_rectangles(grid),
                {
                    "name": f"{base} elements",
                    "shape_type": "rectangle",
                    "scale": scale,
                    "translate": translate,
                    "features": features,
                    "face_color": faces,
                    "edge_color": edges,
                    "edge_width": max(e / 16, 0.5),
                    # µm of confident elements; sized in data units (scaling) to fit inside an
                    # element, so labels never overlap at any zoom. Hovering shows every feature.
                    "text": {
                        "string": "{label}",
                        "visible": rows * cols <= MAX_TEXT_ELEMENTS,
                        "size": max(e / 5, 1.0),
                        "scaling": True,
                        "color": "white",
                        "anchor": "center",
                    },
                    "metadata": meta,
                    **common,
                },
                "shapes",
            )
        )
    return out


class OverlayWidget(QWidget):
    """Dock: for the chosen layer, model and element size, compute and show the per-element overlay
    (on the plane the viewer currently shows, for z/t stacks)."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        from napari.layers import Image

        self.viewer = napari_viewer
        self.layer_picker = LayerPicker(
            napari_viewer, (Image,), self, exclude=lambda layer: is_output_layer(layer, (METADATA_KEY,))
        )
        self.model_picker = ModelPicker(self)
        self.element_size = QSpinBox(self)
        self.element_size.setRange(4, 512)
        self.element_size.setSingleStep(4)
        self.element_size.setSuffix(" px")
        self.element_size.setToolTip("One kernel, PSF and defocus value per element of this size")
        self.flux = QComboBox(self)
        for name in FLUX_VARIANTS:
            self.flux.addItem(name, name)
        self.kernel_size = AutoSpinBox(0, 129, 2, self)
        self.kernel_size.setToolTip("Width of each drawn kernel/PSF (odd; auto: about one element)")
        self.max_defocus = QDoubleSpinBox(self)
        self.max_defocus.setRange(1.0, 100.0)
        self.max_defocus.setSingleStep(1.0)
        self.max_defocus.setValue(32.0)
        self.max_defocus.setSuffix(" µm")
        self.max_defocus.setToolTip("Largest defocus the PSF fit considers (0.5 µm steps)")
        self.smooth = QDoubleSpinBox(self)
        self.smooth.setRange(0.0, 5.0)
        self.smooth.setSingleStep(0.5)
        self.smooth.setValue(OVERLAY_SMOOTH)
        self.smooth.setSuffix(" elements")
        self.smooth.setToolTip(
            "How far neighbouring elements' PSF fits inform each element's defocus (0: each alone). "
            "Elements with too little signal take their neighbours' value and are greyed out"
        )
        self.device = DeviceCombo(self)
        self.parts = {
            "kernels": QCheckBox("learned kernels", self),
            "psfs": QCheckBox("estimated PSFs", self),
            "grid": QCheckBox("element grid + features", self),
            "defocus": QCheckBox("defocus map", self),
        }
        for box in self.parts.values():
            box.setChecked(True)
        self.panel = RunPanel("Compute overlay", self)

        form = QFormLayout()
        form.addRow("image", self.layer_picker)
        form.addRow("model", self.model_picker)
        form.addRow("element size", self.element_size)
        form.addRow("flux", self.flux)
        form.addRow("kernel size", self.kernel_size)
        form.addRow("max defocus", self.max_defocus)
        form.addRow("smoothing", self.smooth)
        form.addRow("device", self.device)
        checks = QGridLayout()
        for i, box in enumerate(self.parts.values()):
            checks.addWidget(box, i // 2, i % 2)
        content = QWidget(self)
        box = QVBoxLayout(content)
        box.addLayout(form)
        box.addLayout(checks)
        box.addWidget(self.panel)
        box.addStretch(1)
        scrolled(self, content)

        self.model_picker.changed.connect(self._model_changed)
        self.panel.run_requested.connect(self.run)
        self._model_changed()

    def _model_changed(self) -> None:
        entry = self.model_picker.entry()
        if entry is None:
            return
        if isinstance(entry.get("element_size"), int) and entry["element_size"] >= 4:
            self.element_size.setValue(entry["element_size"])
        if entry.get("flux") in FLUX_VARIANTS:
            self.flux.setCurrentIndex(FLUX_VARIANTS.index(entry["flux"]))
        self.model_picker.combo.setToolTip(f"trained: {trained_label(entry)}")

    @property
    def busy(self) -> bool:
        return self.panel.busy

    def settings(self) -> dict:
        k = self.kernel_size.auto_value()
        if k != "auto" and k % 2 == 0:
            k += 1  # kernels need a centre pixel
        return {
            "model": self.model_picker.value(),
            "element_size": int(self.element_size.value()),
            "flux": self.flux.currentData(),
            "kernel_size": None if k == "auto" else int(k),
            "max_defocus_um": float(self.max_defocus.value()),
            "smooth": float(self.smooth.value()),
            "device": self.device.value(),
            "parts": tuple(name for name, box in self.parts.items() if box.isChecked()),
        }

    def run(self) -> JobHandle | None:
        """Start computing the overlay of the shown plane; returns the job (None on a bad choice)."""
        if self.busy:
            return None
        layer = self.layer_picker.layer()
        s = self.settings()
        try:
            check_image_layer(layer, s["element_size"], what="overlay")
            if s["model"] is None:
                raise InputError("choose a model (or load a checkpoint file)")
            if not s["parts"]:
                raise InputError("tick at least one overlay to draw")
        except DGNOError as err:
            report_failure(self.panel, err)
            return None
        plane = current_plane_index(self.viewer, layer)
        data = layer.data
        source = {
            "name": layer.name,
            "shape": tuple(int(v) for v in data.shape[-2:]),
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
            "units": tuple(str(u) for u in layer.units) if getattr(layer, "units", None) else None,
            "axis_labels": tuple(layer.axis_labels) if getattr(layer, "axis_labels", None) else None,
        }
        model_name = self.model_picker.name()

        def job(progress, cancel):
            model = load_chosen_model(s["model"], s["device"])
            image = np.asarray(data[plane], dtype=np.float32)  # reads one plane of a dask array
            with cancellable_network(model, cancel):
                result = compute_overlays(
                    model,
                    image,
                    s["element_size"],
                    s["flux"],
                    kernel_size=s["kernel_size"],
                    device=s["device"],
                    z_grid=default_z_grid(s["max_defocus_um"]),
                    smooth=s["smooth"],
                    progress=progress,
                    cancel=cancel,
                )
            settings = {"model": model_name, "device": s["device"]}
            return overlay_layer_tuples(result, source, plane, s["parts"], settings)

        return self.panel.start(job, f"overlay of {layer.name}", self._add_layers, unit=None)

    def cancel(self) -> None:
        self.panel.cancel()

    def _add_layers(self, tuples: list[tuple]) -> None:
        names = []
        for data, kwargs, kind in tuples:
            name = kwargs["name"]
            if name in self.viewer.layers and METADATA_KEY in self.viewer.layers[name].metadata:
                self.viewer.layers.remove(name)  # a re-run replaces its own earlier overlay
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)  # public API only
            names.append(layer.name)
        self.panel.show_message("added " + ", ".join(f"'{n}'" for n in names))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.cancel()
        super().closeEvent(event)
