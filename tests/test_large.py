"""Big images: band-by-band restoration from lazy sources into TIFF / OME-Zarr, bounded memory,
results identical to the in-memory engine, atomic outputs, and OME-Zarr reading."""

import json
import os

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr
from scipy.ndimage import gaussian_filter
from torch import nn

from napari_dgno.cli import main
from napari_dgno.errors import Cancelled, InputError
from napari_dgno.inference import Blender, deblur, deblur_to, plan_tiles
from napari_dgno.io import read_image, save_checkpoint, write_zarr_atomic
from napari_dgno.model import build_model, preset_config
from napari_dgno.normalize import fit_normalization


class TileMean(nn.Module):
    """Adds each tile's own mean: any difference in tiling or blending shows up in the output."""

    def pad_multiple(self, element_size=None):
        return 8

    def forward(self, x, element_size=None, flux=None):
        return x * 0.5 + 3 * x.mean()


class Rows:
    """A lazy array that records every read (rows asked for) and has no chunks of its own."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        rows = key[-2]
        self.reads.append((rows.start, rows.stop))
        return self.data[key]

    def __array__(self, dtype=None, copy=None):  # the normalisation fit samples the whole input
        self.reads.append(("fit", None))
        return self.data if dtype is None else self.data.astype(dtype)


def cells(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random(shape), 4) * 20000 + rng.normal(0, 40, shape)
    return np.clip(img - img.min() + 100, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def big():
    return cells((1024, 768))


def whole_plane_reference(image, net, tile, overlap):
    """The textbook algorithm: normalise the plane, run every tile, blend into the whole plane."""
    norm = fit_normalization(image)
    plane = norm.apply(image)
    blender = Blender(plane.shape)
    with torch.inference_mode():
        for t in plan_tiles(plane.shape, tile, overlap, net.pad_multiple()):
            y = net(torch.from_numpy(np.ascontiguousarray(plane[t.slices]))[None, None])
            blender.add(t, y[0, 0].numpy())
    return norm.invert(blender.result())


def test_bands_equal_the_whole_plane_algorithm(big):
    net = TileMean()
    reference = whole_plane_reference(big, net, 128, 32)
    info = {}
    out = deblur(big, net, tile=128, overlap=32, info=info)
    np.testing.assert_array_equal(out, reference)
    assert info["tiles_per_plane"] > 40 and info["rows_blended"] < 2 * 128  # several bands, never the plane


def test_streaming_tiff_equals_in_memory_deblur(tmp_path, tiny, big):
    """1024 x 768, 128 px tiles: 11 bands; read lazily from a TIFF, written band by band."""
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, big, compression="lzw", rowsperstrip=64)
    expected = deblur(big, tiny, tile=128, overlap=32)
    lazy, meta = read_image(src, lazy=True)
    assert isinstance(lazy, da.Array)
    info = {}
    written = deblur_to(lazy, tmp_path / "out.tif", tiny, tile=128, overlap=32, metadata=meta, info=info)
    restored = tifffile.imread(written)
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored, expected)
    assert info["streamed"] and info["rows_read"] <= 128 + 64  # one band plus one strip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "out.tif"]


def test_lazy_source_is_read_band_by_band(big):
    """No read covers more than a band, each row is read once, the whole image is never held."""
    source = Rows(big)
    info = {}
    out = deblur(source, TileMean(), tile=128, overlap=32, info=info)
    assert source.reads[0] == ("fit", None)  # the percentile fit (subsampled above 4 MPx) ...
    reads = source.reads[1:]  # ... then the engine: bands only
    assert max(stop - start for start, stop in reads) <= 128
    covered = sorted(reads)
    assert covered[0][0] == 0 and covered[-1][1] == 1024
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))  # each row once
    assert info["rows_read"] <= 128 and info["rows_blended"] < 256
    np.testing.assert_array_equal(out, deblur(big, TileMean(), tile=128, overlap=32))


def test_dask_chunks_are_read_once_and_stack_planes_kept_apart():
    stack = np.stack([cells((256, 200), seed=s) for s in range(3)])
    lazy = da.from_array(stack, chunks=(1, 50, 200))
    out = np.zeros(stack.shape, np.float32)
    info = {}
    deblur_to(lazy, out, TileMean(), tile=64, overlap=16, info=info)
    np.testing.assert_array_equal(out, deblur(stack, TileMean(), tile=64, overlap=16))
    assert info["planes"] == 3 and info["rows_read"] <= 64 + 50


def test_zarr_output_round_trips_with_axes_and_pixel_size(tmp_path):
    stack = np.stack([cells((160, 136), seed=s) for s in range(2)])
    src = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        src, stack, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.645, "PhysicalSizeY": 0.645}
    )
    image, meta = read_image(src, lazy=True)
    dst = deblur_to(image, tmp_path / "stack.ome.zarr", TileMean(), tile=64, overlap=16, metadata=meta)
    attrs = json.loads((dst / ".zattrs").read_text())["multiscales"][0]
    assert attrs["version"] == "0.4" and [a["name"] for a in attrs["axes"]] == ["z", "y", "x"]
    assert attrs["datasets"][0]["coordinateTransformations"][0]["scale"][1:] == [0.645, 0.645]
    back, info = read_image(dst)
    assert isinstance(back, da.Array) and info["format"] == "ome-zarr" and info["axes"] == "ZYX"
    assert info["physical_size"]["PhysicalSizeX"] == 0.645
    np.testing.assert_array_equal(back.compute(), deblur(stack, TileMean(), tile=64, overlap=16))
    assert zarr.open_array(str(dst / "0"), mode="r").chunks == (1, 160, 136)


def test_read_ngff_05_and_bare_zarr_arrays(tmp_path):
    data = cells((64, 80))
    group = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", data=data, chunks=(32, 32))
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [{"path": "s0"}]}]}
    image, info = read_image(tmp_path / "v3.zarr")
    assert info["axes"] == "YX" and info["ngff"] is None and image.chunks == ((32, 32), (32, 32, 16))
    np.testing.assert_array_equal(image.compute(), data)
    zarr.save_array(str(tmp_path / "bare.zarr"), data)
    image, info = read_image(tmp_path / "bare.zarr", lazy=False)
    assert isinstance(image, np.ndarray) and info["format"] == "zarr"
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(InputError, match="multiscales"):
        read_image(tmp_path / "plain.zarr")


def test_contiguous_tiff_is_read_in_row_chunks(tmp_path):
    data = cells((600, 500))
    tifffile.imwrite(tmp_path / "plain.tif", data)
    image, _ = read_image(tmp_path / "plain.tif", lazy=True)
    assert len(image.chunks[0]) == 1 and image.dtype == np.uint16  # 600 rows fit in one 4 MB chunk
    np.testing.assert_array_equal(image[100:140, 5:9].compute(), data[100:140, 5:9])
    wide = cells((64, 40000))
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    image, _ = read_image(tmp_path / "wide.tif", lazy=True)
    assert max(image.chunks[0]) < 64
    np.testing.assert_array_equal(image.compute(), wide)


@pytest.mark.parametrize("name", ["out.tif", "out.ome.zarr"])
def test_interrupted_write_leaves_nothing(tmp_path, name):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        deblur_to(cells((256, 256)), tmp_path / name, TileMean(), tile=64, overlap=16, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_output(tmp_path):
    old = write_zarr_atomic(tmp_path / "keep.zarr", np.ones((40, 40), np.float32))
    with pytest.raises(Cancelled):
        deblur_to(cells((256, 256)), old, TileMean(), tile=64, overlap=16, cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.zarr"]
    assert read_image(old)[0].shape == (40, 40)
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a Zarr store"):
        deblur_to(cells((64, 64)), folder, TileMean())
    assert (folder / "notes.txt").read_text() == "mine"


def test_cli_streams_to_zarr_and_tiff(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "1")
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "ckpt" / "tiny", build_model("dgno", preset_config("tiny")), {"preset": "tiny"}
    )
    ckpt = tmp_path / "ckpt" / "tiny.safetensors"
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, cells((200, 176)))
    common = ["--model", ckpt, "--tile", "64", "--overlap", "16"]
    assert main([str(a) for a in ["deblur", src, "-o", tmp_path / "mem.tif", *common, "-q"]]) == 0
    assert (
        main([str(a) for a in ["deblur", src, "-o", tmp_path / "band.tif", "--stream", *common, "-q"]]) == 0
    )
    assert main([str(a) for a in ["deblur", src, "-o", tmp_path / "out.zarr", *common]]) == 0
    assert "streamed" in capsys.readouterr().err
    expected = tifffile.imread(tmp_path / "mem.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "band.tif"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "out.zarr")[0].compute(), expected)
    # and an OME-Zarr can be the input
    assert (
        main([str(a) for a in ["deblur", tmp_path / "out.zarr", "-o", tmp_path / "again.tif", *common, "-q"]])
        == 0
    )
    assert tifffile.imread(tmp_path / "again.tif").shape == (200, 176)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and os.listdir(tmp_path / "out.zarr")


DEAD_PID = (1 << 22) + 1  # above Linux's largest pid_max (and macOS's): no process has it


def _leftover(folder, dest_name, owner, rand="abcd1234", suffix=".tmp", days_old=0.0):
    """A temporary folder as atomic_dir names it, holding a chunk file; optionally aged."""
    path = folder / f".{dest_name}.{owner}{'.' if owner else ''}{rand}{suffix}"
    (path / "0").mkdir(parents=True)
    (path / "0" / "0").write_bytes(b"\0" * 64)
    if days_old:
        when = path.stat().st_mtime - days_old * 86400
        os.utime(path, (when, when))
    return path


def test_a_killed_writers_temporary_folders_are_cleared_by_the_next_write(tmp_path):
    """SIGKILL runs no clean-up: the next write to the same destination removes what a dead writer
    left, and nothing that a running writer (or another destination, or the user) owns."""
    from napari_dgno.io.atomic import _host

    host, name = _host(), "out.ome.zarr"
    gone = [
        _leftover(tmp_path, name, f"{host}-{DEAD_PID}"),  # this host, its process is gone
        _leftover(tmp_path, name, f"{host}-{DEAD_PID}", rand="x1y2z3w4", suffix=".old"),
        _leftover(tmp_path, name, "elsewhere-12", days_old=8),  # another host, untouched for 8 days
        _leftover(tmp_path, name, "", rand="q9w8e7r6", days_old=8),  # an older version's name
    ]
    kept = [
        _leftover(tmp_path, name, f"{host}-{os.getpid()}"),  # a concurrent writer (this process)
        _leftover(tmp_path, name, "elsewhere-12", rand="fresh001"),  # another host, recently written
        _leftover(tmp_path, name, "", rand="new00001"),  # no owner, recent
        _leftover(tmp_path, "other.zarr", f"{host}-{DEAD_PID}"),  # another destination's
        _leftover(tmp_path, name, "", rand="my notes", days_old=30),  # not a name we make
    ]
    locked = _leftover(tmp_path, name, f"{host}-{DEAD_PID}", rand="locked01")
    try:
        import fcntl
    except ImportError:
        fd = None
        gone.append(locked)
    else:  # a writer whose PID we cannot see (another PID namespace) still holds its lock
        fd = os.open(locked, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        kept.append(locked)
    try:
        data = np.arange(40 * 48, dtype=np.float32).reshape(40, 48)
        write_zarr_atomic(tmp_path / name, data)
    finally:
        if fd is not None:
            os.close(fd)
    assert not [p.name for p in gone if p.exists()]
    assert all(p.is_dir() for p in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, *(p.name for p in kept)])
    np.testing.assert_array_equal(read_image(tmp_path / name, lazy=False)[0], data)


def test_a_zarr_write_killed_with_sigkill_is_cleared_by_the_next(tmp_path):
    import signal
    import subprocess
    import sys

    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    dest = tmp_path / "out.ome.zarr"
    script = (
        "import os, signal, sys, numpy as np\n"
        "from napari_dgno.io.ome_zarr import zarr_writer\n"
        "with zarr_writer(sys.argv[1], (64, 64)) as w:\n"
        "    w.write_rows((), 0, np.ones((32, 64), np.float32))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(dest)], capture_output=True, timeout=300)
    assert run.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.ome.zarr.") and left[0].endswith(".tmp")
    write_zarr_atomic(dest, np.zeros((8, 8), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["out.ome.zarr"]
