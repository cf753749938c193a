"""The fine-tune dock's "Training data" box: which data, in which of four forms, and how much to hold
out; it checks a choice from shapes alone and returns what the worker will build.

Defaults that make sense for each form, so a user who opens a blurred and a sharp image can press
Train: the blurred picker follows napari's selection; the sharp picker (pair) and the sharp-images
picker (simulated blur) take the sharpest-looking other layer (:func:`layer_sharpness`), the z-stack
picker a layer with several planes, and the in-focus plane is found in the stack ("auto"), not
assumed. A layer picked by hand in a picker stays picked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QWidget,
)

from ..data.focus import find_focus_plane, focus_measure
from ..errors import InputError
from ..train import user_data as ls
from .layers import check_image_layer
from .pickers import FolderEdit, LayerPicker, same_layer

SHARPNESS_CROP = 256  # px: the sharpness of a layer is judged on the centre of one plane (fast)
CLEARLY_SHARPER = 2.0  # a focus measure this many times another's: that layer is the sharp one


def layer_sharpness(layer) -> float:
    """How sharp a layer looks (normalised variance of the Laplacian, :func:`focus_measure`) on the
    centre of its middle plane: cheap enough for the GUI thread, even for a dask stack."""
    data = layer.data
    shape = data.shape
    index = tuple(n // 2 for n in shape[:-2])
    h, w = shape[-2:]
    y0, x0 = max(0, (h - SHARPNESS_CROP) // 2), max(0, (w - SHARPNESS_CROP) // 2)
    crop = np.asarray(data[index + (slice(y0, y0 + SHARPNESS_CROP), slice(x0, x0 + SHARPNESS_CROP))])
    if crop.ndim != 2 or min(crop.shape) < 3 or not np.issubdtype(crop.dtype, np.number):
        return -np.inf
    value = focus_measure(crop.astype(np.float64))
    return value if np.isfinite(value) else -np.inf


def _is_stack(layer) -> bool:
    return len(layer.data.shape) == 3 and layer.data.shape[0] >= 2 and not getattr(layer, "rgb", False)


if TYPE_CHECKING:
    import napari

MODES = (
    ("pair", "blurred + sharp layers"),
    ("zstack", "z-stack (in-focus target)"),
    ("folders", "folders of TIFF pairs"),
    ("simulated", "sharp layers + simulated blur"),
)


class TrainingDataBox(QGroupBox):
    """Blurred + sharp layers, a z-stack, folders of pairs, or sharp layers to blur by simulation."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__("Training data", parent)
        from napari.layers import Image

        self.mode = QComboBox(self)
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.pages = QStackedWidget(self)
        self.blurred_picker = LayerPicker(napari_viewer, (Image,), self)
        self.sharp_picker = LayerPicker(napari_viewer, (Image,), self, follow_active=False)
        self.stack_picker = LayerPicker(napari_viewer, (Image,), self, follow_if=_is_stack)
        self.focus = QSpinBox(self)
        self.focus.setRange(-1, 100_000)
        self.focus.setSpecialValueText("auto (sharpest plane)")
        self.focus.setValue(-1)
        self.focus.setToolTip("The in-focus plane: the sharp target for every other plane of the stack")
        self.detect_button = QPushButton("Detect", self)
        self.detect_button.setToolTip("Find the sharpest plane now (variance of the Laplacian)")
        self.blurred_dir = FolderEdit("Folder of blurred TIFFs", self)
        self.sharp_dir = FolderEdit("Folder of sharp TIFFs (same file names)", self)
        self.clean_picker = LayerPicker(napari_viewer, (Image,), self, follow_active=False)
        self.max_defocus = QDoubleSpinBox(self)
        self.max_defocus.setRange(1.0, 60.0)
        self.max_defocus.setValue(20.0)
        self.max_defocus.setSuffix(" µm")
        self.max_defocus.setToolTip("Largest defocus the simulator blurs with (BBBC006-like optics)")
        self.val_fraction = QDoubleSpinBox(self)
        self.val_fraction.setRange(0.05, 0.5)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(0.2)
        self.val_fraction.setToolTip(
            "Held out for validation, never trained on: whole planes/images when there are several, "
            "else a strip at the bottom of the image"
        )
        self.pages.addWidget(self._page(("blurred", self.blurred_picker), ("sharp", self.sharp_picker)))
        focus_row = QWidget(self)
        row = QHBoxLayout(focus_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.focus, 1)
        row.addWidget(self.detect_button)
        self.pages.addWidget(self._page(("z-stack", self.stack_picker), ("in-focus plane", focus_row)))
        self.pages.addWidget(
            self._page(("blurred folder", self.blurred_dir), ("sharp folder", self.sharp_dir))
        )
        self.pages.addWidget(
            self._page(("sharp images", self.clean_picker), ("max defocus", self.max_defocus))
        )
        form = QFormLayout(self)
        form.addRow("from", self.mode)
        form.addRow(self.pages)
        form.addRow("validation", self.val_fraction)
        self.mode.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self._sharpness: dict[int, tuple[tuple, float]] = {}
        self._choosing = False
        for name in ("inserted", "removed"):
            getattr(napari_viewer.layers.events, name).connect(self.choose_defaults)
        self.blurred_picker.currentIndexChanged.connect(self.choose_defaults)
        self.choose_defaults()

    # -- defaults
    def _sharp(self, layer) -> float:
        key, shape = id(getattr(layer, "__wrapped__", layer)), tuple(layer.data.shape)
        cached = self._sharpness.get(key)
        if cached is None or cached[0] != shape:
            cached = self._sharpness[key] = (shape, layer_sharpness(layer))
        return cached[1]

    def choose_defaults(self, *_) -> None:
        """Pick sensible layers in every picker the user has not set by hand (see the module doc)."""
        if self._choosing:
            return
        self._choosing = True
        try:
            self._choose_pair()
            if not self.clean_picker.chosen_by_hand() and self.clean_picker.layers():
                self.clean_picker.set_layer(max(self.clean_picker.layers(), key=self._sharp))
            current = self.stack_picker.layer()
            if not self.stack_picker.chosen_by_hand() and (current is None or not _is_stack(current)):
                stacks = [x for x in self.stack_picker.layers() if _is_stack(x)]
                if stacks:
                    self.stack_picker.set_layer(stacks[-1])
        finally:
            self._choosing = False

    def _choose_pair(self) -> None:
        """Sharp: the sharpest other layer, of the blurred one's shape if there is one. When the layer
        selected in napari (which "blurred" follows) is clearly the sharper of the two, it goes into
        "sharp" and its partner into "blurred"."""
        if self.sharp_picker.chosen_by_hand():
            return
        blurred = self.blurred_picker.layer()
        others = [x for x in self.sharp_picker.layers() if not same_layer(x, blurred)]
        if blurred is not None:
            same = [x for x in others if tuple(x.data.shape) == tuple(blurred.data.shape)]
            others = same or others
        if not others:
            return
        partner = max(others, key=self._sharp)
        swap = (
            blurred is not None
            and not self.blurred_picker.chosen_by_hand()
            and self._sharp(blurred) > CLEARLY_SHARPER * max(self._sharp(partner), 0.0)
        )
        if swap:
            self.blurred_picker.set_layer(partner)
            self.sharp_picker.set_layer(blurred)
        else:
            self.sharp_picker.set_layer(partner)

    def _page(self, *rows) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        for label, widget in rows:
            form.addRow(label, widget)
        return page

    def set_mode(self, key: str) -> None:
        self.mode.setCurrentIndex([k for k, _ in MODES].index(key))

    def detect_focus(self) -> tuple[int, str]:
        """``(index, layer name)`` of the sharpest plane of the chosen stack, also shown in the box."""
        layer = self.stack_picker.layer()
        check_image_layer(layer, what="find the focus of")
        ls.check_zstack(layer.data.shape, name=layer.name)
        index = find_focus_plane(np.asarray(layer.data))
        self.focus.setValue(index)
        return index, layer.name

    def _image_layer(self, picker: LayerPicker):
        layer = picker.layer()
        check_image_layer(layer, what="fine-tune on")
        return layer

    def source_builder(self, patch: int, seed: int):
        """Check the data choice now (shapes only) and return the worker's ``build() -> source``."""
        mode = self.mode.currentData()
        fraction = float(self.val_fraction.value())
        common = {"patch": patch, "seed": seed, "val_fraction": fraction}
        if mode == "pair":
            blurred, sharp = self._image_layer(self.blurred_picker), self._image_layer(self.sharp_picker)
            if same_layer(blurred, sharp):
                raise InputError("choose two layers: the blurred image and the sharp image of the same field")
            names = (blurred.name, sharp.name)
            ls.check_same_shape(blurred.data.shape, sharp.data.shape, names)
            ls.plan_holdout(ls.plane_shapes(blurred.data.shape, names[0]), patch, fraction, f"'{names[0]}'")
            b, s = blurred.data, sharp.data
            return lambda: ls.pair_source(b, s, names=names, **common)
        if mode == "zstack":
            layer = self._image_layer(self.stack_picker)
            focus = None if self.focus.value() < 0 else int(self.focus.value())
            ls.check_zstack(layer.data.shape, focus, layer.name)
            ls.plan_holdout([layer.data.shape[1:]], patch, fraction, f"'{layer.name}'", strip=True)
            data, name = layer.data, layer.name
            return lambda: ls.zstack_source(data, focus, name=name, **common)
        if mode == "folders":
            blurred_dir, sharp_dir = self.blurred_dir.path(), self.sharp_dir.path()
            ls.folder_pair_names(blurred_dir, sharp_dir)
            return lambda: ls.folder_source(blurred_dir, sharp_dir, **common)
        layer = self._image_layer(self.clean_picker)
        ls.plan_holdout(ls.plane_shapes(layer.data.shape, layer.name), patch, fraction, f"'{layer.name}'")
        data, name, defocus = layer.data, layer.name, float(self.max_defocus.value())
        return lambda: ls.simulated_source([data], names=[name], max_defocus_um=defocus, **common)
