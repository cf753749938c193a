"""Screenshots of the docks at work, in a real napari window (run under Xvfb on a headless machine).

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/make_screenshots.py
    ... scripts/make_screenshots.py --model runs/x/step-001000.json --only overlay

Loads the "Defocused nuclei" sample, runs the Deblur dock and the Kernel / PSF overlay dock with the
shipped default model (or ``--model PATH``) and saves ``docs/screenshots/{deblur,overlay}.png``;
the Fine-tune dock trains on the sample pair and is caught mid-run (``finetune.png``).
More docks register a function with :func:`screenshot`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS: dict[str, Callable] = {}
WINDOW = (1280, 1000)  # fits the Makefile's 1280x1024 Xvfb screen


def screenshot(name: str):
    """Register ``fn(viewer, model, out_path)`` as the maker of ``docs/screenshots/NAME.png``."""

    def register(fn):
        SHOTS[name] = fn
        return fn

    return register


def wait_until(condition: Callable[[], bool], timeout: float = 900.0) -> None:
    """Let Qt run (workers report back through the event loop) until ``condition()`` holds."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the dock did not finish in time")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the canvas redraw
        app.processEvents()
        time.sleep(0.02)


def choose_model(picker, model) -> None:
    """Select ``model`` (None: the shipped default) in a dock's model picker."""
    if model is None:
        if picker.value() is None:
            raise SystemExit("no shipped model found; pass --model PATH to a checkpoint")
        return
    if Path(str(model)).exists():
        picker.add_checkpoint(model)
    elif not picker.select(model):
        raise SystemExit(f"model {model!r} not found (see `dgno models`)")


def run_dock(widget) -> None:
    handle = widget.run()
    if handle is None:
        raise SystemExit(f"the dock refused to run: {widget.panel.status.text()}")
    wait_until(lambda: not widget.busy)
    print(f"  {widget.panel.status.text()}")


def fresh_viewer(napari):
    viewer = napari.Viewer(title="napari-dgno")
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample("napari-dgno", "defocused_nuclei")
    return viewer


def grid_view(viewer, shape, stride: int = 1) -> None:
    """Side-by-side panels (``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before)."""
    grid = viewer.canvas.grid if hasattr(getattr(viewer, "canvas", None), "grid") else viewer.grid
    grid.shape = shape
    grid.stride = stride
    grid.enabled = True


def keep_layers(viewer, names) -> None:
    """Only ``names``, bottom to top in that order (grid panels follow the layer order)."""
    for layer in list(viewer.layers):
        if layer.name not in names:
            viewer.layers.remove(layer)
    for i, name in enumerate(names):
        viewer.layers.move(viewer.layers.index(name), i)
        viewer.layers[name].visible = True


@screenshot("deblur")
def shoot_deblur(napari, model, out: Path) -> None:
    from napari_dgno.widgets import DeblurWidget

    viewer = fresh_viewer(napari)
    widget = DeblurWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deblur (napari-dgno)", area="right")
    choose_model(widget.model_picker, model)
    run_dock(widget)
    # input | result over ground truth | true defocus map
    names = [
        "defocused nuclei",
        "defocused nuclei deblurred",
        "defocused nuclei (ground truth)",
        "defocused nuclei (true defocus µm)",
    ]
    keep_layers(viewer, names)
    viewer.layers[names[3]].opacity = 1.0
    grid_view(viewer, (2, 2))
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[names[1]]
    wait_until(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


@screenshot("overlay")
def shoot_overlay(napari, model, out: Path) -> None:
    from napari_dgno.widgets import OverlayWidget

    viewer = fresh_viewer(napari)
    widget = OverlayWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Kernel / PSF overlay (napari-dgno)", area="right")
    choose_model(widget.model_picker, model)
    widget.max_defocus.setValue(16.0)  # the sample's defocus stays below 12 µm
    run_dock(widget)
    # top: the image tinted by the fitted defocus; bottom: the learned kernels on the element grid
    names = [
        "defocused nuclei",
        "defocused nuclei fitted defocus (µm)",
        "defocused nuclei kernels",
        "defocused nuclei elements",
    ]
    keep_layers(viewer, names)
    viewer.layers[names[1]].opacity = 0.45
    grid_view(viewer, (2, 1), stride=2)
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[names[3]]
    wait_until(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


@screenshot("finetune")
def shoot_finetune(napari, model, out: Path) -> None:
    """The Fine-tune dock mid-training on the sample's blurred + ground-truth pair, its loss and
    validation-PSNR curves filling in. The run goes to a temporary folder and is not saved."""
    import os
    import tempfile

    from napari_dgno.widgets.finetune import FinetuneWidget

    os.environ["NAPARI_DGNO_RUNS_DIR"] = tempfile.mkdtemp(prefix="napari-dgno-screenshot-runs-")
    viewer = fresh_viewer(napari)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune (napari-dgno)", area="right")
    if model is None and widget.model_picker.value() is None:
        widget.fresh.setChecked(True)  # nothing ships yet: show a fresh network learning
    else:
        widget.fresh.setChecked(False)
        choose_model(widget.model_picker, model)
    widget.set_mode("pair")
    widget.data.blurred_picker.set_layer(viewer.layers["defocused nuclei"])
    widget.data.sharp_picker.set_layer(viewer.layers["defocused nuclei (ground truth)"])
    widget.steps.setValue(200)
    widget.patch.setValue(64)
    widget.batch.setValue(4)
    widget.data.val_fraction.setValue(0.25)
    widget.config_overrides = {"val_size": 4}
    keep_layers(viewer, ["defocused nuclei", "defocused nuclei (ground truth)"])
    grid_view(viewer, (2, 1))  # blurred above its ground truth: the pair being learnt
    if widget.run() is None:
        raise SystemExit(f"the dock refused to run: {widget.panel.status.text()}")
    wait_until(lambda: len(widget.plot.psnrs) >= 5 or not widget.busy)  # about half-way
    widget.plot.redraw()
    viewer.reset_view()
    wait_until(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"  {widget.stats.text()}")
    widget.stop()
    wait_until(lambda: not widget.busy)
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path or model name (default: the shipped default)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--only", nargs="*", help=f"some of: {', '.join(SHOTS)}")
    args = parser.parse_args(argv)

    import napari

    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SHOTS)
    unknown = sorted(set(names) - set(SHOTS))
    if unknown:
        parser.error(f"unknown screenshot(s) {unknown}; known: {sorted(SHOTS)}")
    for name in names:
        path = args.out / f"{name}.png"
        print(f"{name}: {path}")
        SHOTS[name](napari, args.model, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
