"""The command line with the files and mistakes a biologist has (issue 11): formats, the default
output path, option bounds, progress."""

import os
import sys
import types

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_dgno import deblur
from napari_dgno.cli import deblur as cli_deblur
from napari_dgno.cli import main
from napari_dgno.errors import InputError
from napari_dgno.io import read_image

pytestmark = pytest.mark.usefixtures("one_thread_env")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dgno: error: "), err
    for word in words:
        assert word.lower() in lines[0].lower(), err


def png16(path, shape=(96, 128), dpi=(254.0, 254.0)):
    image = (np.random.default_rng(0).random(shape) * 4095).astype(np.uint16)
    Image.fromarray(image).save(path, dpi=dpi)
    return image


# ---------------------------------------------------------------------------------------------------
# formats


def test_a_16_bit_png_is_deblurred_beside_itself_keeping_its_pixel_size(capsys, tmp_path, checkpoint):
    image = png16(tmp_path / "well A01.png")
    code, err = run(capsys, "deblur", tmp_path / "well A01.png", "--model", checkpoint, "-q")
    assert code == 0, err
    out = tmp_path / "well A01-deblurred.tif"
    with tifffile.TiffFile(out) as tif:
        restored = tif.series[0].asarray()
        x_res, y_res = tif.pages[0].get_resolution()
    assert restored.dtype == np.float32 and restored.shape == image.shape
    assert (x_res, y_res) == pytest.approx((254.0, 254.0)) and int(tif.pages[0].resolutionunit) == 2


def test_common_formats_read_as_stored(tmp_path):
    image = png16(tmp_path / "a.png")
    array, info = read_image(tmp_path / "a.png")
    assert array.dtype == np.uint16 and np.array_equal(array, image) and info["axes"] == "YX"
    grey = np.random.default_rng(1).integers(0, 255, (40, 48), dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey-as-rgb.png")
    assert np.array_equal(read_image(tmp_path / "grey-as-rgb.png")[0], grey)  # one channel kept
    Image.fromarray(grey).save(tmp_path / "b.jpg", quality=100)
    assert read_image(tmp_path / "b.jpg")[0].shape == (40, 48)
    colour = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="RGB"):
        read_image(tmp_path / "colour.png")


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("notes.txt", b"plate layout\n", ["not an image file", "png", "czi"]),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(40), ["truncated or corrupt"]),
        ("scan.tif", b"\x89PNG\r\n\x1a\n" + bytes(40), ["not a TIFF", "PNG"]),
    ],
)
def test_unreadable_formats_are_one_line(capsys, tmp_path, checkpoint, name, content, words):
    (tmp_path / name).write_bytes(content)
    code, err = run(capsys, "deblur", tmp_path / name, "-o", tmp_path / "out.tif", "--model", checkpoint)
    assert code == 2
    one_line(err, *words)


@pytest.mark.skipif("bioio" in sys.modules or __import__("importlib").util.find_spec("bioio"), reason="bioio")
def test_a_vendor_file_without_the_extra_names_the_extra(capsys, tmp_path, checkpoint):
    (tmp_path / "embryo.czi").write_bytes(b"ZISRAWFILE" + bytes(100))
    code, err = run(capsys, "deblur", tmp_path / "embryo.czi", "--model", checkpoint)
    assert code == 2
    one_line(err, "bioio-czi", "pip install 'napari-dgno[formats]'")


def test_vendor_files_go_through_bioio_with_axes_and_pixel_size(capsys, tmp_path, checkpoint, monkeypatch):
    """bioio's documented API (BioImage: dask_data in TCZYX, dims.order, physical_pixel_sizes)."""
    import dask.array as da

    data = (np.random.default_rng(3).random((1, 1, 2, 64, 80)) * 4000).astype(np.uint16)

    class BioImage:
        def __init__(self, path):
            self.dask_data = da.from_array(data)
            self.dims = types.SimpleNamespace(order="TCZYX")
            self.physical_pixel_sizes = types.SimpleNamespace(Z=2.0, Y=0.325, X=0.325)
            self.scenes = ("Image:0",)

    monkeypatch.setitem(sys.modules, "bioio", types.SimpleNamespace(BioImage=BioImage))
    (tmp_path / "stack.nd2").write_bytes(b"not read by the fake")
    code, err = run(capsys, "deblur", tmp_path / "stack.nd2", "--model", checkpoint, "-q")
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "stack-deblurred.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX" and tif.series[0].shape == (2, 64, 80)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert float(pixels["PhysicalSizeX"]) == pytest.approx(0.325) and float(pixels["PhysicalSizeZ"]) == 2.0


# ---------------------------------------------------------------------------------------------------
# where the output goes


def test_the_default_output_is_never_replaced_without_force(capsys, tmp_path, checkpoint):
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, (np.random.default_rng(4).random((64, 80)) * 4095).astype(np.uint16))
    code, err = run(capsys, "deblur", src, "--model", checkpoint, "-q")
    assert code == 0, err
    out = tmp_path / "cells-deblurred.tif"
    before = out.read_bytes()
    code, err = run(capsys, "deblur", src, "--model", checkpoint, "-q")
    assert code == 2 and out.read_bytes() == before
    one_line(err, "already exists", "--force")
    code, err = run(capsys, "deblur", src, "--model", checkpoint, "-q", "--force")
    assert code == 0, err


def test_a_folder_output_takes_one_input(capsys, tmp_path, checkpoint):
    src = tmp_path / "cells.ome.tif"
    tifffile.imwrite(src, (np.random.default_rng(5).random((64, 80)) * 4095).astype(np.uint16), ome=True)
    (tmp_path / "existing").mkdir()
    code, err = run(capsys, "deblur", src, "-o", tmp_path / "existing", "--model", checkpoint, "-q")
    assert code == 0, err
    assert (tmp_path / "existing" / "cells.ome.tif").is_file()
    code, err = run(capsys, "deblur", src, "-o", f"{tmp_path / 'new'}/", "--model", checkpoint, "-q")
    assert code == 0, err
    assert (tmp_path / "new" / "cells.ome.tif").is_file()


def test_a_batch_still_needs_an_output_folder(capsys, tmp_path, checkpoint):
    for i in range(2):
        tifffile.imwrite(tmp_path / f"{i}.tif", np.zeros((32, 32), np.uint16))
    code, err = run(capsys, "deblur", tmp_path, "--model", checkpoint)
    assert code == 2
    one_line(err, "-o FOLDER")


# ---------------------------------------------------------------------------------------------------
# bounds, checked before any work


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--element-size", "4096"], ["element size", "512"]),
        (["--element-size", "1000"], ["element size", "512"]),
        (["--element-size", "256"], ["larger than the image", "0 for one element"]),
        (["--tile", "100000"], ["tile", "8192"]),
        (["--tile", "8"], ["tile", "16"]),
        (["--tile", "64", "--overlap", "64"], ["overlap", "smaller than the tile"]),
        (["--threads", "0"], ["threads", "at least one"]),
        (["--threads", str((os.cpu_count() or 1) + 1)], ["threads", "cores"]),
        (["--workers", "0"], ["workers"]),
        (["--normalize", "frame"], ["normalize", "plane"]),
    ],
)
def test_numeric_options_have_bounds_with_a_reason(capsys, tmp_path, checkpoint, monkeypatch, extra, words):
    from napari_dgno import registry

    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.zeros((64, 80), np.uint16) + 7)
    loads = []
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: loads.append(a))
    code, err = run(capsys, "deblur", src, "-o", tmp_path / "out.tif", "--model", checkpoint, *extra)
    assert code == 2
    one_line(err, *words)
    assert not loads and not (tmp_path / "out.tif").exists()  # refused before the model was loaded


def test_the_api_checks_the_same_bounds_before_any_work(tiny):
    image = np.random.default_rng(6).random((520, 696), dtype=np.float32)
    calls = []

    class Counting(torch.nn.Module):
        config = tiny.config

        def pad_multiple(self, e=None):
            return tiny.pad_multiple(e)

        def forward(self, x, element_size=None, flux=None):
            calls.append(x.shape)
            return x

    for kwargs, words in [
        ({"element_size": 4096}, "512"),
        ({"element_size": 1000}, "512"),
        ({"tile": 10**6}, "8192"),
        ({"threads": (os.cpu_count() or 1) + 1}, "cores"),
        ({"normalize": "global"}, "plane"),
    ]:
        with pytest.raises(InputError, match=words):
            deblur(image, Counting(), **kwargs)
    assert calls == []
    with pytest.raises(InputError, match="larger than the image"):
        deblur(image[:64, :100], Counting(), element_size=128)


# ---------------------------------------------------------------------------------------------------
# progress


def test_progress_has_a_total_names_the_plane_and_waits_a_second(monkeypatch):
    import io

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    quick = cli_deblur._Progress(enabled=True)
    quick.on_open({"shape": (3, 64, 64)})
    for done in range(1, 7):
        quick(done, 6)
    quick.close()
    assert stream.getvalue() == ""  # under a second: no bar at all

    monkeypatch.setattr(cli_deblur, "DELAY_S", 0.0)
    slow = cli_deblur._Progress(enabled=True)
    slow.on_open({"shape": (3, 64, 64)})
    for done in range(1, 7):
        slow(done, 6)
        slow.bar.refresh()
        if done == 3:
            assert "plane 2/3" in stream.getvalue() and "3/6" in stream.getvalue()
    slow.close()


def test_a_batch_bar_counts_files_against_their_total(capsys, tmp_path, monkeypatch):
    from napari_dgno import batch

    seen = {}

    def fake_deblur_files(inputs, out_dir, model, **kwargs):
        kwargs["on_total"](3)
        seen["total"] = cli_bar()[0].total
        for i in range(3):
            kwargs["on_result"]({"input": f"{i}.tif", "status": "done"})
        return [{}] * 3

    bars = []

    def cli_bar():
        return bars

    import tqdm

    real = tqdm.tqdm

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(tqdm, "tqdm", recording)
    monkeypatch.setattr(batch, "deblur_files", fake_deblur_files)
    for i in range(3):
        tifffile.imwrite(tmp_path / f"{i}.tif", np.zeros((32, 32), np.uint16))
    code, err = run(capsys, "deblur", tmp_path, "-o", tmp_path / "out")
    assert code == 0, err
    assert seen["total"] == 3 and bars[0].unit == "file"
