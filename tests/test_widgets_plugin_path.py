"""The docks as napari really opens them for users: through the plugin path, which hands each dock a
``PublicOnlyProxy`` of the viewer (its layers are proxies too), not the viewer object itself."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.qt

DOCKS = ["Deblur", "Kernel / PSF overlay", "Fine-tune"]


def _open(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-dgno", name)
    return widget


@pytest.mark.parametrize("name", DOCKS)
def test_the_layer_picker_follows_the_selected_layer_through_the_proxy(make_napari_viewer, name):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    first = viewer.add_image(rng.random((64, 64)).astype(np.float32), name="first")
    widget = _open(viewer, name)
    picker = getattr(widget, "layer_picker", None) or widget.data.blurred_picker
    assert picker.layer().name == "first"
    second = viewer.add_image(rng.random((64, 64)).astype(np.float32), name="second")
    assert picker.layer().name == "second"  # a newly opened image becomes the active layer
    viewer.layers.selection.active = first
    assert picker.layer().name == "first"
    viewer.layers.selection.active = second
    assert picker.layer().name == "second"


def test_fine_tuning_refuses_the_same_layer_as_blurred_and_sharp_through_the_proxy(make_napari_viewer):
    from napari_dgno.errors import InputError

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((128, 128)).astype(np.float32), name="only")
    widget = _open(viewer, "Fine-tune")
    widget.set_mode("pair")
    widget.data.sharp_picker.set_layer(viewer.layers["only"])
    assert widget.data.blurred_picker.layer().name == widget.data.sharp_picker.layer().name == "only"
    with pytest.raises(InputError, match="choose two layers"):
        widget.source_builder()


def test_a_layer_picked_in_the_dock_by_hand_stays_picked(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        viewer.add_image(rng.random((64, 64)).astype(np.float32), name=name)
    picker = _open(viewer, "Deblur").layer_picker
    assert picker.layer().name == "c"
    picker.setCurrentIndex(picker.findText("a"))
    picker.activated.emit(picker.currentIndex())  # what a user's click emits
    viewer.layers.selection.active = viewer.layers["b"]
    assert picker.layer().name == "a"
    viewer.layers.remove("a")  # the hand-picked layer is gone: follow the selection again
    viewer.layers.selection.active = viewer.layers["c"]
    assert picker.layer().name == "c"


# -- Fine-tune defaults ------------------------------------------------------------------------------


def _nuclei(seed=3, shape=(96, 96)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sharp = np.zeros(shape, np.float32)
    for y, x in rng.integers(8, min(shape) - 8, size=(25, 2)):
        sharp[y - 3 : y + 4, x - 3 : x + 4] += rng.uniform(500, 2000)
    blurred = gaussian_filter(sharp, 4) + 100 + rng.normal(0, 2, shape)
    return blurred.astype(np.float32), sharp


@pytest.mark.parametrize("sharp_opened_last", [False, True])
def test_fine_tune_pairs_default_to_a_blurred_and_the_sharpest_other_layer(
    make_napari_viewer, sharp_opened_last
):
    viewer = make_napari_viewer()
    blurred, sharp = _nuclei()
    order = [("blurred", blurred), ("sharp", sharp)]
    for name, data in order[::-1] if not sharp_opened_last else order:
        viewer.add_image(data, name=name)
    viewer.add_image(np.random.default_rng(0).random((40, 40)).astype(np.float32), name="other size")
    viewer.layers.selection.active = viewer.layers["sharp" if sharp_opened_last else "blurred"]
    data = _open(viewer, "Fine-tune").data
    assert data.blurred_picker.layer().name == "blurred"
    assert data.sharp_picker.layer().name == "sharp"  # never the blurred layer, never another size
    assert data.clean_picker.layer().name == "sharp"  # simulated blur starts from the sharpest layer


def test_fine_tune_z_stack_picker_takes_a_stack_and_finds_its_focus(make_napari_viewer, qtbot):
    from scipy.ndimage import gaussian_filter

    viewer = make_napari_viewer()
    _, sharp = _nuclei(4)
    planes = [gaussian_filter(sharp, abs(z - 3) * 1.5 + 0.01) + 100 for z in range(6)]  # focus: plane 3
    viewer.add_image(np.stack(planes), name="stack")
    viewer.add_image(sharp, name="flat")  # active now: a 2-D layer is no z-stack
    widget = _open(viewer, "Fine-tune")
    widget.set_mode("zstack")
    assert widget.data.stack_picker.layer().name == "stack"
    assert widget.data.focus.value() == -1  # "auto": found in the stack, not assumed
    assert widget.detect_focus() == 3


# -- Stop and Cancel land within about a second, even in the middle of a long pass -------------------


def _slow_modules(net, seconds=0.06):
    """Every submodule sleeps before its forward: one pass takes seconds, each layer milliseconds."""
    for module in list(net.modules())[1:]:
        module.register_forward_pre_hook(lambda *_: time.sleep(seconds))
    return net


def _click_and_time(qtbot, widget, after_s):
    """Press the dock's Run/Cancel (Train/Stop) button ``after_s`` into the run; seconds until idle."""
    qtbot.wait(int(after_s * 1000))
    assert widget.busy
    start = time.perf_counter()
    widget.panel.button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    return time.perf_counter() - start


def test_deblur_cancel_lands_within_a_second_in_a_long_pass(make_napari_viewer, qtbot, tiny_model):
    import torch

    from napari_dgno.model import build_model, preset_config

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(5).random((64, 64)).astype(np.float32), name="img")
    widget = _open(viewer, "Deblur")
    torch.manual_seed(0)
    widget.model_picker.add_model(_slow_modules(build_model("dgno", preset_config("tiny")).eval()), "slow")
    cancelled = []
    handle = widget.run()
    handle.cancelled.connect(lambda: cancelled.append(True))
    latency = _click_and_time(qtbot, widget, 1.0)
    assert cancelled and latency < 2.0, latency
    assert [layer.name for layer in viewer.layers] == ["img"]


def test_fine_tune_stop_lands_within_a_second_in_a_long_step(
    make_napari_viewer, qtbot, tiny_model, monkeypatch
):
    from napari_dgno.train import engine

    real = engine.build_network

    def slow_network(cfg):
        model, extra = real(cfg)
        return _slow_modules(model), extra

    monkeypatch.setattr(engine, "build_network", slow_network)
    viewer = make_napari_viewer()
    blurred, sharp = _nuclei(6, (64, 64))
    viewer.add_image(blurred, name="blurred")
    viewer.add_image(sharp, name="sharp")
    widget = _open(viewer, "Fine-tune")
    assert widget.model_picker.select("tiny-test")
    widget.patch.setValue(32)
    widget.batch.setValue(2)
    widget.steps.setValue(50)
    widget.config_overrides = {"val_size": 1, "val_patch": 32}
    handle = widget.run()
    assert handle is not None, widget.panel.status.text()
    latency = _click_and_time(qtbot, widget, 2.0)
    assert latency < 2.0, latency
    assert "stopped" in widget.panel.status.text()


# -- layout: the docks fit a 1280x1000 screen together -----------------------------------------------


def test_docks_fit_a_small_screen_together_and_show_no_empty_plot(make_napari_viewer, tiny_model):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer()
    long = "BBBC006_v1_images_z_16_with_a_very_long_file_name_from_the_microscope_software_" * 2
    viewer.add_image(np.zeros((64, 64), np.float32), name=long)
    docks = {name: _open(viewer, name) for name in DOCKS}
    for name, widget in docks.items():
        hint = widget.minimumSizeHint()
        assert hint.width() <= 420, (name, hint.width())  # a long name no longer widens the dock
        # ... and the dock is never narrower than its content, which would cut it off at the right
        content = widget.findChild(QScrollArea).widget()
        assert hint.width() >= content.minimumSizeHint().width(), name
    # Deblur and Fine-tune stacked in a 1000-px-high window, with napari's menus and title bars
    height = docks["Deblur"].minimumSizeHint().height() + docks["Fine-tune"].minimumSizeHint().height()
    assert height <= 800, height
    finetune = docks["Fine-tune"]
    assert finetune.plot.canvas.isHidden() and not finetune.plot.placeholder.isHidden()
    finetune.plot.add_step(1, 0.5)
    assert not finetune.plot.canvas.isHidden() and finetune.plot.placeholder.isHidden()


def test_thread_settings_reach_the_runs(make_napari_viewer, tiny_model, monkeypatch):
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "3")
    viewer = make_napari_viewer()
    deblur, finetune = _open(viewer, "Deblur"), _open(viewer, "Fine-tune")
    assert deblur.threads.text() == "auto (3)" and deblur.settings()["threads"] is None
    deblur.threads.setValue(1)
    assert deblur.settings()["threads"] == 1
    assert finetune.model_picker.select("tiny-test")
    assert finetune.config().threads is None  # auto: the engine then takes $NAPARI_DGNO_THREADS
    finetune.threads.setValue(2)
    assert finetune.config().threads == 2


def _menu_titles(app, menu_id: str) -> list[str]:
    from app_model.types import SubmenuItem

    return [
        item.title if isinstance(item, SubmenuItem) else item.command.title
        for item in app.menus.get_menu(menu_id)
    ]


def test_the_menus_read_as_the_readme_says(make_napari_viewer):
    # napari titles plugin menu items with the manifest's display name; the README quotes the paths a
    # user clicks, so they are checked against the menus napari builds, not against the manifest.
    from pathlib import Path

    from napari._app_model import get_app_model

    make_napari_viewer()
    app = get_app_model()
    plugin = "DGNO defocus deblurring"
    assert plugin in _menu_titles(app, "napari/plugins")
    docks = [f"{name} ({plugin})" for name in DOCKS]
    assert _menu_titles(app, "napari/plugins/napari-dgno") == docks
    sample = f"Defocused nuclei ({plugin})"
    assert sample in _menu_titles(app, "napari/file/samples")
    command = f"Deblur defocus ({plugin})"
    assert command in _menu_titles(app, "napari/layers/filter")
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for path in (
        f"Plugins → {plugin} → {docks[0]}",
        f"File → Open Sample → {sample}",
        f"Layers → Filter → {command}",
    ):
        assert path in readme, path
