"""TIFF / OME-TIFF reading and atomic writing, and one-line errors for files we cannot use."""

import os

import numpy as np
import pytest
import tifffile

from napari_dgno.errors import InputError
from napari_dgno.io import read_image, write_tiff_atomic


def _one_line(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), message


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_lzw_any_dtype(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((520, 696)) * 200).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data, compression="lzw")
    image, info = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(image, data)
    assert info["dtype"] == np.dtype(dtype).name and info["shape"] == (520, 696)
    assert info["axes"] == "YX" and info["compression"] == "lzw"


def test_shape_and_axes_survive_a_round_trip(tmp_path):
    data = np.random.default_rng(1).random((2, 3, 32, 40)).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", data, photometric="minisblack", metadata={"axes": "TZYX"})
    image, info = read_image(tmp_path / "in.tif")
    assert info["axes"] == "TZYX"
    write_tiff_atomic(tmp_path / "out.tif", image * 2, metadata=info)
    back, info2 = read_image(tmp_path / "out.tif")
    assert back.dtype == np.float32 and back.shape == data.shape and info2["axes"] == "TZYX"
    np.testing.assert_allclose(back, data * 2)


def test_ome_tiff_in_and_out(tmp_path):
    data = np.arange(3 * 24 * 32, dtype=np.uint16).reshape(3, 24, 32)
    tifffile.imwrite(
        tmp_path / "in.ome.tif",
        data,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.645, "PhysicalSizeY": 0.645},
    )
    image, info = read_image(tmp_path / "in.ome.tif")
    assert info["format"] == "ome" and info["axes"] == "ZYX"
    assert info["physical_size"]["PhysicalSizeX"] == pytest.approx(0.645)
    write_tiff_atomic(tmp_path / "out.ome.tif", image, metadata=info)
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.float32
        assert "PhysicalSizeX" in tif.ome_metadata
    # and an OME input may be written as a plain TIFF
    write_tiff_atomic(tmp_path / "plain.tif", image, metadata=info)
    assert read_image(tmp_path / "plain.tif")[1]["axes"] == "ZYX"


def test_imagej_stays_imagej(tmp_path):
    data = np.zeros((4, 16, 16), np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0})
    image, info = read_image(tmp_path / "ij.tif")
    assert info["format"] == "imagej" and info["axes"] == "ZYX"
    write_tiff_atomic(tmp_path / "out.tif", image, metadata=info)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata.get("spacing") == 2.0
        assert tif.series[0].shape == (4, 16, 16)


def test_planes_written_one_by_one_are_one_stack(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as writer:
        for k in range(4):
            writer.write(np.full((16, 24), k, np.uint16), compression="lzw")
    image, info = read_image(tmp_path / "pages.tif")
    assert image.shape == (4, 16, 24) and list(image[:, 0, 0]) == [0, 1, 2, 3]


def test_lazy_read_is_dask(tmp_path):
    data = np.random.default_rng(2).integers(0, 4000, (3, 32, 32)).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "s.tif", data, compression="lzw", photometric="minisblack", metadata={"axes": "ZYX"}
    )
    image, info = read_image(tmp_path / "s.tif", lazy=True)
    assert hasattr(image, "compute") and image.shape == (3, 32, 32)
    np.testing.assert_array_equal(image[1].compute(), data[1])


def test_missing_folder_empty_not_tiff(tmp_path):
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "missing.tif")
    _one_line(err, "no such file")
    with pytest.raises(InputError) as err:
        read_image(tmp_path)
    _one_line(err, "folder")
    (tmp_path / "zero.tif").write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "zero.tif")
    _one_line(err, "empty")
    (tmp_path / "text.tif").write_text("hello, I am not an image\n")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "text.tif")
    _one_line(err, "not a TIFF")
    (tmp_path / "png.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "png.tif")
    _one_line(err, "not a TIFF")


@pytest.mark.parametrize("compression", [None, "lzw"])
@pytest.mark.parametrize("fraction", [0.002, 0.3, 0.99])
def test_truncated_tiff(tmp_path, compression, fraction, capfd):
    data = (np.random.default_rng(3).random((3, 200, 160)) * 4000).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "full.tif",
        data,
        compression=compression,
        photometric="minisblack",
        metadata={"axes": "ZYX"},
    )
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: max(8, int(len(raw) * fraction))])
    capfd.readouterr()
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "cut.tif")
    _one_line(err, "cut.tif")
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)
    assert capfd.readouterr().err == ""  # tifffile's own warnings are kept quiet


def test_zero_size_image(tmp_path):
    with pytest.warns(UserWarning):  # tifffile warns: a zero-size TIFF is nonconformant
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 16), np.uint8))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "empty.tif")
    _one_line(err)


def test_rgb_refused_unless_channel_axis(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (40, 48, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "rgb.tif")
    _one_line(err, "RGB")
    image, info = read_image(tmp_path / "rgb.tif", channel_axis=-1)
    assert image.shape == (3, 40, 48) and info["axes"] == "SYX"
    np.testing.assert_array_equal(image[1], rgb[..., 1])
    rgba = np.zeros((40, 48, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.raises(InputError):
        read_image(tmp_path / "rgba.tif")


def test_planar_colour_stack_is_a_stack_of_planes(tmp_path):
    # tifffile writes any (3, Y, X) array as planar RGB unless told otherwise: Y, X are still last.
    stack = np.random.default_rng(5).integers(0, 4000, (3, 64, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", stack, photometric="rgb", planarconfig="separate")
    image, info = read_image(tmp_path / "planar.tif")
    assert image.shape == (3, 64, 64)
    np.testing.assert_array_equal(image, stack)


def test_write_is_atomic(tmp_path, monkeypatch):
    dest = tmp_path / "out.tif"
    dest.write_bytes(b"previous result")

    def interrupted(path, data, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*\x00partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_tiff_atomic(dest, np.zeros((8, 8), np.float32))
    assert dest.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]
    monkeypatch.undo()
    fresh = tmp_path / "new.tif"
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(tifffile, "imwrite", interrupted)
        write_tiff_atomic(fresh, np.zeros((8, 8), np.float32))
    assert not fresh.exists() and sorted(os.listdir(tmp_path)) == ["out.tif"]


def test_write_needs_an_existing_folder(tmp_path):
    with pytest.raises(InputError) as err:
        write_tiff_atomic(tmp_path / "nope" / "out.tif", np.zeros((8, 8)))
    _one_line(err, "does not exist")


@pytest.mark.parametrize("writer", ["whole", "rows"])
def test_a_killed_writers_temporary_file_is_cleared_by_the_next_write(tmp_path, writer):
    """A named temporary that SIGKILL left (no clean-up runs) goes with the next write to the same
    file; a running writer's (here: this process's) stays."""
    from napari_dgno.io.atomic import _host
    from napari_dgno.io.tiff import tiff_writer

    dead = tmp_path / f".out.tif.{_host()}-{(1 << 22) + 1}.abcd1234.tmp"  # no process has that PID
    named = tmp_path / f".out.tif.{_host()}-{(1 << 22) + 1}.17.tmp"  # atomic_file's name, killed at rename
    live = tmp_path / f".out.tif.{_host()}-{os.getpid()}.efgh5678.tmp"
    other = tmp_path / f".other.tif.{_host()}-{(1 << 22) + 1}.abcd1234.tmp"
    for path in (dead, named, live, other):
        path.write_bytes(b"II*\x00partial")
    data = np.arange(12 * 16, dtype=np.float32).reshape(12, 16)
    if writer == "whole":
        write_tiff_atomic(tmp_path / "out.tif", data)
    else:
        with tiff_writer(tmp_path / "out.tif", data.shape) as rows:
            rows.write_rows((), 0, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.tif", live.name, other.name])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), data)
