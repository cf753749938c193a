"""The Fine-tune dock in a real (Xvfb) napari viewer: each data source, Stop/Resume, Save, bad choices."""

import json
import re

import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.qt
TIMEOUT_MS = 60_000


def make_widget(viewer, steps=3):
    from napari_dgno.widgets.finetune import FinetuneWidget

    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_picker.select("tiny-test")
    widget.patch.setValue(32)
    widget.batch.setValue(2)
    widget.steps.setValue(steps)
    widget.config_overrides = {"val_size": 2, "val_patch": 32}
    return widget


def train(qtbot, widget, start=None):
    handle = (start or widget.run)()
    assert handle is not None, widget.panel.status.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    return handle


def pair(rng, shape):
    sharp = rng.integers(100, 3000, size=shape).astype(np.float32)
    blurred = (sharp + np.roll(sharp, 1, -1) + np.roll(sharp, 1, -2)) / 3
    return blurred, sharp


def test_each_data_source_trains_saves_and_deblur_lists_it_at_once(
    make_napari_viewer, qtbot, tiny_model, tmp_path
):
    from napari_dgno.inference.engine import list_models
    from napari_dgno.widgets import DeblurWidget

    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    blurred, sharp = pair(rng, (64, 64))
    viewer.add_image(blurred, name="blurred")
    viewer.add_image(sharp, name="sharp")
    viewer.add_image(np.stack([blurred, sharp, blurred * 0.9 + 5]), name="stack")
    viewer.add_image(sharp, name="clean")
    for i in range(2):
        b, s = pair(rng, (48, 48))
        for kind, image in (("blurred", b), ("sharp", s)):
            (tmp_path / kind).mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / kind / f"img{i}.tif", image.astype(np.uint16))
    deblur = DeblurWidget(viewer)  # already open while the model is trained and saved
    viewer.window.add_dock_widget(deblur)
    widget = make_widget(viewer)
    assert re.fullmatch(r"finetune-tiny-test-\d{8}-\d{4}", widget.run_name.placeholderText())

    widget.set_mode("pair")
    widget.data.blurred_picker.set_layer(viewer.layers["blurred"])
    widget.data.sharp_picker.set_layer(viewer.layers["sharp"])
    widget.set_mode("zstack")
    widget.data.stack_picker.set_layer(viewer.layers["stack"])
    assert widget.detect_focus() == 1 and widget.data.focus.value() == 1
    widget.data.blurred_dir.edit.setText(str(tmp_path / "blurred"))
    widget.data.sharp_dir.edit.setText(str(tmp_path / "sharp"))
    widget.data.clean_picker.set_layer(viewer.layers["clean"])
    widget.data.max_defocus.setValue(6.0)

    for mode in ("pair", "zstack", "folders", "simulated"):
        widget.set_mode(mode)
        if mode == "simulated":  # also the "fresh network" start
            widget.fresh_preset = "tiny"
            widget.fresh.setChecked(True)
            assert not widget.model_picker.isEnabled()
        handle = train(qtbot, widget)
        status = widget.panel.status.text()
        assert status.startswith("trained 3 steps"), status
        assert widget.plot.steps == [1, 2, 3] and widget.plot.val_steps and widget.plot.psnrs
        assert not widget.resume_button.isEnabled() and widget.save_button.isEnabled()
        assert "val PSNR" in widget.stats.text()
        assert handle.pbar is None  # napari's activity progress was shown and closed

        widget.save_name.setText(f"ft-{mode}")
        path = widget.save()
        assert path is not None and path.is_file() and path.with_suffix(".safetensors").is_file()
        assert f"ft-{mode}" in [e["name"] for e in list_models()]
        # the open Deblur dock lists it at once, without pressing its refresh button
        assert f"ft-{mode}" in [e["name"] for e in deblur.model_picker.entries()]
        meta = json.loads(path.read_text())
        training = meta["training"]
        assert training["steps"] == 3 and training["data"]["validation"]["fraction"] == 0.2
        base = training["config"]["base_checkpoint"]
        assert (base is None) if mode == "simulated" else base.endswith("tiny-test.safetensors")

    assert deblur.model_picker.select("ft-zstack")
    assert [layer.name for layer in viewer.layers] == ["blurred", "sharp", "stack", "clean"]


def test_stop_keeps_weights_and_resume_continues_to_the_end(make_napari_viewer, qtbot, tiny_model, tmp_path):
    from napari_dgno.inference.engine import list_models
    from napari_dgno.train.state import checkpoints

    viewer = make_napari_viewer()
    blurred, sharp = pair(np.random.default_rng(1), (64, 64))
    viewer.add_image(blurred, name="blurred")
    viewer.add_image(sharp, name="sharp")
    widget = make_widget(viewer, steps=60)
    widget.data.blurred_picker.set_layer(viewer.layers["blurred"])
    widget.data.sharp_picker.set_layer(viewer.layers["sharp"])
    widget.run_name.setText("stop-resume")

    def stop_once(done, total):
        if done >= 1 and widget.panel.button.text() == "Stop":
            widget.panel.button.click()  # Train became Stop

    handle = widget.run()
    assert widget.panel.button.text() == "Stop" and not widget.settings_box.isEnabled()
    handle.progressed.connect(stop_once)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)

    stopped = widget._run.steps_done
    assert 0 < stopped < 60, stopped
    assert f"stopped at step {stopped}/60" in widget.panel.status.text()
    run_dir = tmp_path / "runs" / "stop-resume"
    assert checkpoints(run_dir)[0][0] == stopped  # the last good weights are on disk
    assert widget.plot.steps == list(range(1, stopped + 1))
    assert widget.resume_button.isEnabled() and widget.save_button.isEnabled()
    assert widget.panel.button.text() == "Train"

    widget.save_name.setText("ft-stopped")  # a stopped run can be saved as it is
    assert widget.save() is not None
    saved = [e for e in list_models() if e["name"] == "ft-stopped"]
    assert (
        saved
        and json.loads((tmp_path / "models" / "ft-stopped.json").read_text())["training"]["steps"] == stopped
    )

    train(qtbot, widget, start=widget.resume)
    assert widget._run.steps_done == 60 and widget.panel.status.text().startswith("trained 60 steps")
    # continued from the checkpoint (not from step 1): the curve has every step exactly once
    assert widget.plot.steps == list(range(1, 61))
    assert widget.plot.val_steps[-1] == 60
    assert not widget.resume_button.isEnabled()
    meta = json.loads((run_dir / "stop-resume.json").read_text())
    assert meta["training"]["steps"] == 60


def test_bad_choices_give_messages_not_tracebacks(
    make_napari_viewer, qtbot, tiny_model, tmp_path, notifications
):
    viewer = make_napari_viewer()
    widget = make_widget(viewer)

    def refused(text):
        assert widget.run() is None and not widget.busy
        assert text in widget.panel.status.text(), widget.panel.status.text()
        assert text in notifications[-1][1]

    widget.set_mode("pair")
    refused("choose an image layer to fine-tune on")  # no layer at all
    viewer.add_image(np.zeros((64, 64, 3), dtype=np.uint8), name="colour", rgb=True)
    widget.data.blurred_picker.set_layer(viewer.layers["colour"])
    widget.data.sharp_picker.set_layer(viewer.layers["colour"])
    refused("RGB")
    viewer.add_image(np.ones((64, 64), np.float32), name="a")
    viewer.add_image(np.ones((48, 64), np.float32), name="b")
    widget.data.blurred_picker.set_layer(viewer.layers["a"])
    widget.data.sharp_picker.set_layer(viewer.layers["a"])
    refused("choose two layers")
    widget.data.sharp_picker.set_layer(viewer.layers["b"])
    refused("differ in shape")
    viewer.add_image(np.ones((40, 40), np.float32), name="small")
    viewer.add_image(np.ones((40, 40), np.float32), name="small sharp")
    widget.data.blurred_picker.set_layer(viewer.layers["small"])
    widget.data.sharp_picker.set_layer(viewer.layers["small sharp"])
    refused("choose a smaller patch size")

    widget.set_mode("zstack")
    widget.data.stack_picker.set_layer(viewer.layers["a"])
    refused("a z-stack must be (Z, Y, X)")
    assert widget.detect_focus() is None

    widget.set_mode("folders")
    refused("choose a folder of blurred TIFFs")
    (tmp_path / "empty").mkdir()
    widget.data.blurred_dir.edit.setText(str(tmp_path / "empty"))
    widget.data.sharp_dir.edit.setText(str(tmp_path / "empty"))
    refused("no TIFF files with the same name")

    widget.set_mode("simulated")
    widget.data.clean_picker.set_layer(viewer.layers["small"])
    refused("choose a smaller patch size")
    widget.data.clean_picker.set_layer(viewer.layers["a"])
    widget.run_name.setText("not a name!")
    refused("cannot be a model name")

    assert widget.save() is None
    assert "train (or resume) a run first" in widget.panel.status.text()
    assert [layer.name for layer in viewer.layers] == ["colour", "a", "b", "small", "small sharp"]
    assert not (tmp_path / "runs").exists()
