"""The Kernel / PSF overlay dock in a real (Xvfb) napari viewer on a tiny model: geometry first."""

import dask.array as da
import numpy as np
import pytest

pytestmark = pytest.mark.qt
TIMEOUT_MS = 90_000


def make_widget(viewer, model_name, element_size=16):
    from napari_dgno.widgets import OverlayWidget

    widget = OverlayWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_picker.select(model_name)
    widget.element_size.setValue(element_size)
    widget.max_defocus.setValue(8.0)  # a short PSF family keeps the fit quick
    return widget


def run_and_wait(qtbot, widget):
    handle = widget.run()
    assert handle is not None, widget.panel.status.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    return handle


def world_box(layer, r0, c0, r1, c1):
    """World corners of data pixels [r0:r1, c0:c1] (pixel edges at ±0.5 around integer centres)."""
    return np.array([layer.data_to_world((r0 - 0.5, c0 - 0.5)), layer.data_to_world((r1 - 0.5, c1 - 0.5))])


def test_overlay_tiles_sit_on_their_elements(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    e = 16
    image = viewer.add_image(
        np.random.default_rng(0).random((2 * e, 2 * e)).astype(np.float32) * 1000,
        name="img",
        scale=(0.5, 2.0),
        translate=(10.0, -3.0),
    )
    widget = make_widget(viewer, tiny_model, e)
    run_and_wait(qtbot, widget)
    assert "added" in widget.panel.status.text()

    kernels, psfs = viewer.layers["img kernels"], viewer.layers["img PSFs"]
    grid, defocus = viewer.layers["img elements"], viewer.layers["img fitted defocus (µm)"]
    k = kernels.data.shape[0] // 2
    assert k % 2 == 1 and kernels.data.shape == psfs.data.shape == (2 * k, 2 * k)
    assert defocus.data.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            element = world_box(image, i * e, j * e, (i + 1) * e, (j + 1) * e)
            for mosaic in (kernels, psfs):
                block = world_box(mosaic, i * k, j * k, (i + 1) * k, (j + 1) * k)
                np.testing.assert_allclose(block, element, atol=1e-9)
            np.testing.assert_allclose(world_box(defocus, i, j, i + 1, j + 1), element, atol=1e-9)
            rect = grid.data[2 * i + j]
            corners = np.array([grid.data_to_world(rect.min(0)), grid.data_to_world(rect.max(0))])
            np.testing.assert_allclose(corners, element, atol=1e-9)

    # per-element features on the grid, displayed as text and colour
    features = grid.features
    assert len(features) == 4
    for column in ("defocus_um", "kernel_width_px", "kernel_anisotropy"):
        assert column in features
    np.testing.assert_allclose(features["defocus_um"].to_numpy().reshape(2, 2), defocus.data)
    assert (features["kernel_anisotropy"] >= 1).all() and (features["kernel_width_px"] > 0).all()
    assert "confidence" in features and features["confidence"].between(0, 1).all()
    # µm written inside each element, scaled with the zoom so neighbours' labels never overlap
    assert grid.text.string.format == "{label}" and grid.text.scaling and grid.text.size <= e / 4
    assert kernels.opacity < 1 and psfs.opacity < 1  # the image stays visible under the mosaics
    # kernels are shown peak-normalised, sign kept; PSFs peak at 1
    assert np.abs(kernels.data).max() == pytest.approx(1.0)
    lo, hi = kernels.contrast_limits
    assert lo == -hi  # signed, zero in the middle of the colormap
    assert psfs.data.min() >= 0 and psfs.data.max() == pytest.approx(1.0)
    meta = kernels.metadata["napari_dgno_overlay"]
    assert meta["model"] == "tiny-test" and meta["element_size"] == e and meta["kernel_size"] == k

    # a second run replaces its own layers instead of piling up
    names = [layer.name for layer in viewer.layers]
    run_and_wait(qtbot, widget)
    assert sorted(layer.name for layer in viewer.layers) == sorted(names)


def test_overlay_of_the_displayed_plane_of_a_dask_stack(make_napari_viewer, qtbot, tiny_model):
    from napari_dgno.inference.engine import load_model
    from napari_dgno.overlays import learned_kernels, mosaic, normalize_for_display

    viewer = make_napari_viewer()
    stack = np.random.default_rng(1).random((3, 32, 48)).astype(np.float32) * 1000
    stack[1] = stack[1, ::-1]  # a plane that differs from the others
    image = viewer.add_image(
        da.from_array(stack, chunks=(1, 32, 48)), name="zs", scale=(3.0, 0.5, 0.5), translate=(0, 2.0, 4.0)
    )
    viewer.dims.set_current_step(0, 1)
    widget = make_widget(viewer, tiny_model, 16)
    widget.parts["psfs"].setChecked(False)
    widget.parts["defocus"].setChecked(False)
    run_and_wait(qtbot, widget)

    kernels = viewer.layers["zs [plane 1] kernels"]
    assert "zs [plane 1] elements" in viewer.layers and "zs [plane 1] PSFs" not in viewer.layers
    assert kernels.metadata["napari_dgno_overlay"]["plane"] == [1]
    assert kernels.ndim == 2  # drawn over the Y, X axes of the stack
    model = load_model(widget.model_picker.value())
    expected = mosaic(normalize_for_display(learned_kernels(model, stack[1], 16)))
    np.testing.assert_allclose(kernels.data, expected, atol=1e-5)
    k = kernels.data.shape[0] // 2
    element = world_box(image, 16, 32, 32, 48)[:, 1:]  # element (1, 2), Y/X world coordinates
    np.testing.assert_allclose(world_box(kernels, k, 2 * k, 2 * k, 3 * k), element, atol=1e-9)


def test_cancel_adds_no_overlay(make_napari_viewer, qtbot, tiny_model, slow_net):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((64, 64)).astype(np.float32), name="img")
    widget = make_widget(viewer, tiny_model, 8)
    widget.model_picker.add_model(slow_net(0.5), "slow")
    handle = widget.run()
    # Cancel while the first pass (0.5 s) runs. Pressing it on the first progress signal raced: the
    # signal reaches the GUI thread after the worker has moved on, and 1 full run in ~3 passed the
    # run's last Cancel check first.
    widget.cancel()
    cancelled = []
    handle.cancelled.connect(lambda: cancelled.append(True))
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert cancelled, widget.panel.status.text()
    assert [layer.name for layer in viewer.layers] == ["img"]
    assert "cancelled" in widget.panel.status.text()


def test_bad_choices_give_messages(make_napari_viewer, tiny_model, monkeypatch):
    from napari.utils import notifications as nt

    shown = []
    monkeypatch.setattr(nt, "show_warning", shown.append)
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_model, 16)
    assert widget.run() is None and "choose an image layer" in widget.panel.status.text()
    viewer.add_image(np.zeros((12, 40), dtype=np.float32), name="small")
    widget.layer_picker.set_layer(viewer.layers["small"])
    assert widget.run() is None and "smaller than one 16-px element" in widget.panel.status.text()
    viewer.add_image(np.zeros((32, 32, 3), dtype=np.uint8), name="rgb", rgb=True)
    widget.layer_picker.set_layer(viewer.layers["rgb"])
    assert widget.run() is None and "RGB" in widget.panel.status.text()
    viewer.add_image(np.zeros((32, 32), dtype=np.float32), name="fine")
    widget.layer_picker.set_layer(viewer.layers["fine"])
    for box in widget.parts.values():
        box.setChecked(False)
    assert widget.run() is None and "tick at least one" in widget.panel.status.text()
    assert len(shown) == 4
    assert [layer.name for layer in viewer.layers] == ["small", "rgb", "fine"]


def test_partial_elements_are_drawn_at_their_true_size_with_public_api_only(
    make_napari_viewer, qtbot, tiny_model
):
    import warnings

    viewer = make_napari_viewer()
    e, (h, w) = 16, (40, 24)  # 2.5 x 1.5 elements: the last row and column are half elements
    image = viewer.add_image(np.random.default_rng(3).random((h, w)).astype(np.float32) * 900, name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dgno", "Kernel / PSF overlay")
    assert widget.model_picker.select(tiny_model)
    widget.element_size.setValue(e)
    widget.max_defocus.setValue(8.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_and_wait(qtbot, widget)
    private = [str(c.message) for c in caught if issubclass(c.category, FutureWarning)]
    assert not private, private  # napari warns when a plugin reaches for private API
    full = world_box(image, 0, 0, h, w)
    for name in ("img kernels", "img PSFs", "img fitted defocus (µm)"):
        layer = viewer.layers[name]
        rows, cols = layer.data.shape
        # the mosaic ends at the image's edge (within one mosaic pixel), not a whole element past it
        np.testing.assert_allclose(world_box(layer, 0, 0, rows, cols), full, atol=e / 17 + 1e-9)
