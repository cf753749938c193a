"""The docks as napari really opens them for users: through the plugin path, which hands each dock a
``PublicOnlyProxy`` of the viewer (its layers are proxies too), not the viewer object itself."""

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
