"""The Deblur dock and the Layers > Filter command, in a real (Xvfb) napari viewer on a tiny model."""

import copy

import dask.array as da
import numpy as np
import pytest

from napari_dgno.errors import InputError
from napari_dgno.io.checkpoint import save_checkpoint
from napari_dgno.model import build_model, preset_config

pytestmark = pytest.mark.qt
TIMEOUT_MS = 60_000


def make_widget(viewer, model_name):
    from napari_dgno.widgets import DeblurWidget

    widget = DeblurWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_picker.select(model_name)
    return widget


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def test_sample_deblur_adds_layer_with_geometry_and_metadata(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dgno", "defocused_nuclei")
    image = viewer.layers["defocused nuclei"]
    assert viewer.layers["defocused nuclei (ground truth)"].data.shape == image.data.shape
    data_before, data_copy = image.data, image.data.copy()
    meta_before = copy.deepcopy(image.metadata)

    widget = make_widget(viewer, tiny_model)
    assert widget.layer_picker.layer() is image  # the sample's blurred image is active
    # the user model was found automatically and its training combination is shown
    assert "trained: face @ 8 px" in widget.trained.text()
    assert widget.flux.itemText(0) == "face ✓"
    assert widget.device.value() == "auto" and "cpu" in widget.device.toolTip()

    handle = widget.run()
    assert handle is not None and widget.busy and widget.panel.button.text() == "Cancel"
    wait_done(qtbot, widget)

    out = viewer.layers["defocused nuclei deblurred"]
    assert out.data.shape == image.data.shape and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.scale, image.scale)
    np.testing.assert_array_equal(out.translate, image.translate)
    assert tuple(out.units) == tuple(image.units) and tuple(out.axis_labels) == tuple(image.axis_labels)
    settings = out.metadata["napari_dgno"]
    assert settings["model"] == "tiny-test" and settings["element_size"] == 8 and settings["flux"] == "face"
    assert settings["device"] == "cpu" and settings["tile"] >= 256 and settings["overlap"] >= 0
    assert settings["normalization"]["low_percentile"] == 1.0 and settings["version"]
    assert settings["source_layer"] == "defocused nuclei"
    # the input layer is untouched
    assert image.data is data_before
    np.testing.assert_array_equal(image.data, data_copy)
    assert image.metadata == meta_before
    assert widget.panel.button.text() == "Deblur" and "added" in widget.panel.status.text()


def test_z_stack_all_planes_with_plane_progress(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).integers(100, 4000, size=(3, 48, 40)).astype(np.uint16)
    image = viewer.add_image(
        stack, name="stack", scale=(2.0, 0.5, 0.25), translate=(5.0, 1.0, -2.0), axis_labels=("z", "y", "x")
    )
    widget = make_widget(viewer, tiny_model)
    progress = []
    handle = widget.run()
    handle.progressed.connect(lambda d, t: progress.append((d, t, widget.panel.plane_bar.maximum())))
    wait_done(qtbot, widget)
    out = viewer.layers["stack deblurred"]
    assert out.data.shape == stack.shape
    np.testing.assert_array_equal(out.scale, image.scale)
    np.testing.assert_array_equal(out.translate, image.translate)
    assert tuple(out.axis_labels) == ("z", "y", "x")
    assert out.metadata["napari_dgno"]["planes"] == 3
    assert widget.panel.plane_bar.maximum() == 3
    assert progress and progress[-1][0] == progress[-1][1] == 3  # one tile per plane, 3 planes
    # every plane was restored (not copied, not left empty)
    assert all(np.abs(out.data[i] - stack[i]).max() > 0 for i in range(3))


def test_dask_layer(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    array = np.random.default_rng(1).random((2, 40, 48)).astype(np.float32) * 1000
    lazy = da.from_array(array, chunks=(1, 40, 48))
    image = viewer.add_image(lazy, name="lazy")
    widget = make_widget(viewer, tiny_model)
    widget.run()
    wait_done(qtbot, widget)
    out = viewer.layers["lazy deblurred"]
    assert isinstance(out.data, np.ndarray) and out.data.shape == array.shape
    assert image.data is lazy
    # same result as the library on the computed array
    from napari_dgno.inference.engine import deblur

    expected = deblur(array, widget.model_picker.value(), element_size=8, flux="face")
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-2)


def test_self_ensemble_checkbox_passes_through(make_napari_viewer, qtbot, tiny_model, deblur_calls):
    from napari_dgno.widgets import deblur_layer

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(5).random((40, 48)).astype(np.float32), name="img")
    widget = make_widget(viewer, tiny_model)
    assert not widget.self_ensemble.isChecked() and "8" in widget.self_ensemble.toolTip()
    assert "8 orientations" in widget.self_ensemble.text() and "8x slower" in widget.self_ensemble.text()
    widget.run()
    wait_done(qtbot, widget)
    assert viewer.layers["img deblurred"].metadata["napari_dgno"]["self_ensemble"] is False
    viewer.layers.remove("img deblurred")

    widget.self_ensemble.setChecked(True)
    assert widget.settings()["self_ensemble"] is True
    widget.run()
    wait_done(qtbot, widget)
    settings = viewer.layers["img deblurred"].metadata["napari_dgno"]
    assert settings["self_ensemble"] is True and settings["requested"]["self_ensemble"] is True
    assert "self-ensemble" in widget.panel.status.text()
    assert [k.get("self_ensemble") for k in deblur_calls] == [False, True]

    _, kwargs, _ = deblur_layer(image, tiny_model, self_ensemble=True)  # the scriptable function too
    assert (
        deblur_calls[-1]["self_ensemble"] is True
        and kwargs["metadata"]["napari_dgno"]["self_ensemble"] is True
    )


def test_cancel_mid_run_adds_no_layer(make_napari_viewer, qtbot, tiny_model, slow_net):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(2).random((4, 64, 64)).astype(np.float32)
    viewer.add_image(stack, name="big")
    widget = make_widget(viewer, tiny_model)
    # a model handed over as an object (scripts, tests) rather than found on disk
    widget.model_picker.add_model(slow_net(0.05), "slow")
    assert widget.model_picker.name() == "slow"
    widget.tile.setValue(32)  # 9 tiles per plane, 36 in all
    widget.overlap.setValue(8)
    reports = []

    def on_progress(done, total):
        reports.append((done, total))
        if len(reports) == 1:
            widget.panel.button.click()  # the Run button is the Cancel button now

    handle = widget.run()
    handle.progressed.connect(on_progress)
    cancelled = []
    handle.cancelled.connect(lambda: cancelled.append(True))
    wait_done(qtbot, widget)
    assert cancelled and reports
    assert reports[-1][0] < reports[-1][1]  # stopped before the last tile
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert "cancelled" in widget.panel.status.text()
    assert widget.panel.button.text() == "Deblur" and widget.panel.button.isEnabled()


def test_bad_choices_give_messages_not_tracebacks(make_napari_viewer, qtbot, tiny_model, notifications):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_model)

    assert widget.run() is None  # no layer at all
    assert "choose an image layer" in widget.panel.status.text()
    assert notifications and "choose an image layer" in notifications[-1][1]

    viewer.add_image(np.zeros((32, 32, 3), dtype=np.uint8), name="colour", rgb=True)
    widget.layer_picker.set_layer(viewer.layers["colour"])
    assert widget.run() is None
    assert "RGB" in widget.panel.status.text()

    viewer.add_image(np.zeros((6, 20), dtype=np.float32), name="thin")
    widget.layer_picker.set_layer(viewer.layers["thin"])
    assert widget.run() is None
    assert "smaller than one 8-px element" in widget.panel.status.text()

    # a bad setting only the engine can judge is reported from the worker, still without a traceback
    viewer.add_image(np.ones((32, 32), dtype=np.float32), name="ok")
    widget.layer_picker.set_layer(viewer.layers["ok"])
    widget.element_size.setValue(10)  # not a multiple of 4
    assert widget.run() is not None
    wait_done(qtbot, widget)
    assert "multiple of 4" in widget.panel.status.text()
    assert notifications[-1][0] == "warning" and "multiple of 4" in notifications[-1][1]
    assert [layer.name for layer in viewer.layers] == ["colour", "thin", "ok"]

    labels = viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="masks")
    assert widget.layer_picker.findText("masks") == -1  # labels are not offered at all
    with pytest.raises(InputError, match="labels layer"):
        from napari_dgno.widgets import deblur_layer

        deblur_layer(labels, tiny_model)


def test_deblur_layer_function_returns_layer_data_tuple(make_napari_viewer, tiny_model):
    from napari_dgno.widgets import deblur_layer

    viewer = make_napari_viewer()
    image = viewer.add_image(
        np.random.default_rng(3).random((40, 40)).astype(np.float32), name="img", scale=(0.3, 0.3)
    )
    data, kwargs, kind = deblur_layer(image, tiny_model, element_size=16, flux="p0dg")
    assert kind == "image" and data.shape == (40, 40)
    assert kwargs["name"] == "img deblurred" and tuple(kwargs["scale"]) == (0.3, 0.3)
    assert kwargs["metadata"]["napari_dgno"]["flux"] == "p0dg"
    assert kwargs["metadata"]["napari_dgno"]["element_size"] == 16


def test_filter_menu_command_runs_in_background(
    make_napari_viewer, qtbot, tiny_model, notifications, no_shipped_models
):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(4).random((40, 40)).astype(np.float32), name="img")
    app = get_app_model()
    assert "napari-dgno.deblur_layer" in app.commands
    app.commands.execute_command("napari-dgno.deblur_layer").result()
    qtbot.waitUntil(lambda: "img deblurred" in viewer.layers, timeout=TIMEOUT_MS)
    assert viewer.layers["img deblurred"].metadata["napari_dgno"]["model"] == "tiny-test"

    # a labels layer: a notification, no layer, no traceback
    viewer.add_labels(np.zeros((40, 40), dtype=np.uint8), name="masks")
    viewer.layers.selection.active = viewer.layers["masks"]
    app.commands.execute_command("napari-dgno.deblur_layer").result()
    qtbot.wait(300)
    assert any("labels layer" in msg for _, msg in notifications)
    assert [layer.name for layer in viewer.layers] == ["img", "img deblurred", "masks"]


def test_model_choices_checkpoint_file_and_trained_combos(
    make_napari_viewer, tiny_model, tmp_path, monkeypatch, notifications, no_shipped_models
):
    from qtpy.QtWidgets import QFileDialog

    from napari_dgno.widgets.pickers import LOAD_CHECKPOINT

    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_model)
    # a second model trained (per its JSON) with p0dg at 16 px, loaded through "Load checkpoint…"
    other = save_checkpoint(
        tmp_path / "elsewhere" / "p0dg16",
        build_model("dgno", preset_config("tiny", flux="p0dg", element_size=16)),
        meta={"name": "p0dg16"},
    )
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(other), ""))
    combo = widget.model_picker.combo
    load_index = combo.findData(LOAD_CHECKPOINT)
    combo.setCurrentIndex(load_index)
    combo.activated.emit(load_index)
    assert widget.model_picker.name() == "p0dg16"
    assert widget.model_picker.entry()["source"] == "file"
    assert (widget.element_size.value(), widget.flux.currentData()) == (16, "p0dg")
    assert widget.trained.text() == "trained: p0dg @ 16 px"
    assert widget.flux.itemText(1) == "p0dg ✓" and widget.flux.itemText(0) == "face"

    widget.flux.setCurrentIndex(2)  # "none" at 16 px: nobody trained that
    assert "not trained at this setting" in widget.trained.text()
    widget.element_size.setValue(8)
    widget.flux.setCurrentIndex(0)  # face at 8 px: the other model was
    assert "tiny-test" in widget.trained.text() and widget.flux.itemText(0) == "face ✓"

    # a file that is not a checkpoint: a notification, the selection stays
    bad = tmp_path / "notes.json"
    bad.write_text("{}")
    widget.model_picker.add_checkpoint(bad)
    assert widget.model_picker.name() == "p0dg16"
    assert "not a napari-dgno checkpoint" in notifications[-1][1]
