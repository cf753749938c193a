"""Screenshots of the docks at work on a real image, in a real napari window (Xvfb on a headless machine).

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/make_screenshots.py
    ... scripts/make_screenshots.py --model runs/x/step-001000.json --only overlay

A 1280x1000 window opens the three docks the way napari does for users (*Plugins → DGNO defocus deblurring*,
through ``add_plugin_dock_widget``), tabbed in the right dock area, and raises the one at work:

* ``deblur.png``: the Deblur dock has restored a real out-of-focus BBBC006 field
  (``../shared/real/bbbc006_z00_a19_s2.tif``, 696x520 uint16, 20x widefield, Hoechst): input above,
  result below;
* ``overlay.png``: the Kernel / PSF overlay dock on the same field: fitted defocus map over the
  image above, learned kernels on the element grid below;
* ``finetune.png``: the Fine-tune dock training the shipped model on the worked example's pairs
  (``scripts/finetune_example.py``: 60x/1.4 oil, spherical aberration; simulated here if missing),
  caught mid-run with its loss and validation-PSNR curves. The run goes to a temporary folder.

The real images are for looking only (``../shared/real/README.md``): nothing here trains on them.
All use the shipped default model (or ``--model PATH``). More docks register with :func:`screenshot`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "real" / "bbbc006_z00_a19_s2.tif"
SHOTS: dict[str, Callable] = {}
WINDOW = (1280, 1000)  # fits the Makefile's 1280x1024 Xvfb screen
DOCKS = {"deblur": "Deblur", "overlay": "Kernel / PSF overlay", "finetune": "Fine-tune"}
EXAMPLE_PAIRS = 8  # training pairs of the worked example shown in the fine-tune shot


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


def new_viewer(napari):
    viewer = napari.Viewer(title="napari-dgno")
    viewer.window._qt_window.resize(*WINDOW)
    return viewer


def open_real(viewer):
    """The real out-of-focus BBBC006 field, opened as a user would (File → Open)."""
    if not REAL.is_file():
        raise SystemExit(f"{REAL} is missing: the screenshots show this real image (see ../shared/real/)")
    (layer,) = viewer.open(str(REAL))
    return layer


def open_docks(viewer, front: str):
    """The three docks through napari's plugin path, tabbed on the right; ``front`` raised."""
    opened = {
        key: viewer.window.add_plugin_dock_widget("napari-dgno", name, tabify=True)
        for key, name in DOCKS.items()
    }
    dock, widget = opened[front]
    dock.show()
    dock.raise_()
    wait_until(lambda: True)
    return widget


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


def save(viewer, out: Path) -> None:
    viewer.reset_view()
    wait_until(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)


@screenshot("deblur")
def shoot_deblur(napari, model, out: Path) -> None:
    viewer = new_viewer(napari)
    image = open_real(viewer)
    widget = open_docks(viewer, "deblur")
    choose_model(widget.model_picker, model)
    run_dock(widget)
    names = [image.name, f"{image.name} deblurred"]  # input above, result below
    keep_layers(viewer, names)
    grid_view(viewer, (2, 1))
    viewer.layers.selection.active = viewer.layers[names[1]]
    save(viewer, out)
    viewer.close()


@screenshot("overlay")
def shoot_overlay(napari, model, out: Path) -> None:
    viewer = new_viewer(napari)
    image = open_real(viewer)
    widget = open_docks(viewer, "overlay")
    choose_model(widget.model_picker, model)
    run_dock(widget)
    # top: the image tinted by the fitted defocus; bottom: the learned kernels on the element grid
    names = [
        image.name,
        f"{image.name} fitted defocus (µm)",
        f"{image.name} kernels",
        f"{image.name} elements",
    ]
    keep_layers(viewer, names)
    viewer.layers[names[1]].opacity = 0.45
    grid_view(viewer, (2, 1), stride=2)
    viewer.layers.selection.active = viewer.layers[names[3]]
    save(viewer, out)
    viewer.close()


def example_pairs(n: int):
    """The first ``n`` training pairs of the worked fine-tune example (simulated if missing)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import finetune_example as ex

    args = ex.parse_args(["--out", str(ROOT / "finetune-example")])
    train, _ = ex.make_data(args, ex.simulation(args))
    pairs = ex.read_pairs(train)[:n]
    return np.stack([b for b, _ in pairs]), np.stack([s for _, s in pairs]), args


@screenshot("finetune")
def shoot_finetune(napari, model, out: Path) -> None:
    """The Fine-tune dock mid-training on the worked example's pairs (a stack of blurred uint16
    frames and one of sharp float32 references), its loss and validation-PSNR curves filling in.
    The run goes to a temporary folder and is not saved."""
    import os
    import tempfile

    os.environ["NAPARI_DGNO_RUNS_DIR"] = tempfile.mkdtemp(prefix="napari-dgno-screenshot-runs-")
    blurred, sharp, example = example_pairs(EXAMPLE_PAIRS)
    viewer = new_viewer(napari)
    px = (example.pixel_um, example.pixel_um)
    viewer.add_image(blurred, name="60x-1.4 blurred", scale=(1.0, *px), units=("", "µm", "µm"))
    viewer.add_image(sharp, name="60x-1.4 sharp", scale=(1.0, *px), units=("", "µm", "µm"))
    widget = open_docks(viewer, "finetune")
    widget.fresh.setChecked(False)
    choose_model(widget.model_picker, model)
    widget.set_mode("pair")
    widget.data.blurred_picker.set_layer(viewer.layers["60x-1.4 blurred"])
    widget.data.sharp_picker.set_layer(viewer.layers["60x-1.4 sharp"])
    # the worked example's settings: 200 steps of batch 8 at 128², its learning rate
    widget.steps.setValue(example.steps)
    widget.patch.setValue(example.patch)
    widget.batch.setValue(example.batch)
    widget.lr.setValue(example.lr)
    grid_view(viewer, (1, 2))  # blurred beside its sharp reference: the pairs being learnt
    if widget.run() is None:
        raise SystemExit(f"the dock refused to run: {widget.panel.status.text()}")
    wait_until(lambda: len(widget.plot.psnrs) >= 4 or not widget.busy)  # base + 3: step 60 of 200
    widget.plot.redraw()
    save(viewer, out)
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
