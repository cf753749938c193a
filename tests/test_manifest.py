"""The npe2 manifest (widgets, sample data, filter menu) and the shipped sample (no display needed)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_dgno

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_dgno.__file__).resolve().parent


def _npe2_cli() -> list[str]:
    exe = Path(sys.executable).with_name("npe2")
    return [str(exe)] if exe.exists() else [shutil.which("npe2") or "npe2"]


def test_npe2_validate_with_imports():
    out = subprocess.run(
        [*_npe2_cli(), "validate", "napari-dgno", "--imports"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_packaged_manifest_is_the_root_manifest():
    # the entry point napari_dgno:napari.yaml must resolve in editable installs and wheels alike
    packaged = PACKAGE / "napari.yaml"
    assert packaged.is_file()
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_manifest_contributions():
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-dgno")
    assert mf.name == "napari-dgno"
    mf.validate_imports()
    commands = {c.id: c.python_name for c in mf.contributions.commands}
    widgets = {w.display_name: commands[w.command] for w in mf.contributions.widgets}
    assert widgets == {
        "Deblur": "napari_dgno.widgets:DeblurWidget",
        "Kernel / PSF overlay": "napari_dgno.widgets:OverlayWidget",
        "Fine-tune": "napari_dgno.widgets.finetune:FinetuneWidget",
    }
    (sample,) = mf.contributions.sample_data
    assert (sample.key, sample.display_name) == ("defocused_nuclei", "Defocused nuclei")
    assert commands[sample.command] == "napari_dgno.samples:defocused_nuclei"
    (item,) = mf.contributions.menus["napari/layers/filter"]
    assert commands[item.command] == "napari_dgno.widgets:deblur_layer_command"


def test_sample_is_small_offline_and_held_out():
    from scipy import ndimage as ndi

    from napari_dgno.data.clean_images import CELLS3D_REGIONS, CELLS3D_SLICES
    from napari_dgno.samples import BLURRED, DEPTH, SAMPLE_DIR, SHARP, defocused_nuclei

    files = [SAMPLE_DIR / name for name in (BLURRED, SHARP, DEPTH)]
    assert sum(f.stat().st_size for f in files) < 300_000
    layers = defocused_nuclei()
    assert [kind for *_, kind in layers] == ["image"] * 3
    by_name = {kwargs["name"]: data for data, kwargs, _ in layers}
    blurred = by_name["defocused nuclei"]
    sharp = by_name["defocused nuclei (ground truth)"]
    depth = by_name["defocused nuclei (true defocus µm)"]
    assert blurred.dtype == np.uint16 and sharp.dtype == np.uint16 and depth.dtype == np.float32
    assert blurred.shape == sharp.shape == depth.shape and min(blurred.shape) >= 128
    assert layers[-1][1]["name"] == "defocused nuclei"  # added last: on top and selected
    info = layers[-1][1]["metadata"]["napari_dgno_sample"]
    # the recorded microscope pixel (60x on a 6.5 µm camera) is the layers' physical scale
    assert info["pixel_um"] == pytest.approx(6.5 / 60, abs=1e-4)
    assert all(kwargs["scale"] == (info["pixel_um"],) * 2 for _, kwargs, _ in layers)
    # cells3d's 112-px test region at 0.26 µm, resampled to that pixel: nothing else in the field
    assert blurred.shape == (round(112 * 0.26 / info["pixel_um"]),) * 2
    rows, cols = CELLS3D_REGIONS["test"]
    region = f"test region (rows {rows.start}–{rows.stop - 1}, cols {cols.start}–{cols.stop - 1})"
    assert region in info["source"]  # never a training or validation nucleus
    z_slice = int(info["source"].split("z-slice ")[1].split()[0])
    assert z_slice in CELLS3D_SLICES
    # the blur is real and spatially varying: where the defocus is large the blurred image has less
    # fine detail than the ground truth (1-px Gaussian first: shot noise is not detail), several depths
    deep = (depth > 0.5 * depth.max())[:, 1:]
    detail = lambda im: np.abs(np.diff(ndi.gaussian_filter(im.astype(float), 1.0), axis=1))[deep].mean()  # noqa: E731
    assert detail(blurred) < 0.8 * detail(sharp)
    tan = info["na"] / np.sqrt(info["n_medium"] ** 2 - info["na"] ** 2)
    blur_px = depth * tan / info["pixel_um"]  # geometric blur radius, camera pixels
    assert blur_px.min() < 2.5 and 10.0 <= blur_px.max() <= 14.0


@pytest.mark.parametrize("module", ["napari_dgno.overlays", "napari_dgno.samples"])
def test_library_modules_do_not_import_qt(module):
    code = f"import sys, {module}; print([m for m in ('qtpy', 'PyQt6', 'napari') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
