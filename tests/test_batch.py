"""A plate on a dask cluster (2 worker processes on 127.0.0.1): same results as one process, one
line per failed file, re-runs skip finished outputs, the model loads once per worker."""

import json
import os

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno import batch
from napari_dgno.cli import main
from napari_dgno.errors import InputError
from napari_dgno.inference import deblur, load_model
from napari_dgno.io import save_checkpoint
from napari_dgno.model import build_model, preset_config

WELLS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(base, build_model("dgno", preset_config("tiny")), {"preset": "tiny"})
    return base.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def cluster():
    """The same local cluster ``dgno deblur --workers 2`` starts, shared by the tests."""
    with batch._client(None, 2) as client:
        client.wait_for_workers(2)
        yield client


@pytest.fixture
def plate(tmp_path):
    folder = tmp_path / "plate"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for i in range(WELLS):
        images[f"w{i}.tif"] = (rng.random((72, 88 + 8 * i)) * 4000).astype(np.uint16)
        tifffile.imwrite(folder / f"w{i}.tif", images[f"w{i}.tif"], compression="lzw")
    good = (folder / "w0.tif").read_bytes()
    (folder / "broken.tif").write_bytes(good[: len(good) // 2])  # a truncated download
    return folder, images


def test_cluster_is_local_only(cluster):
    addresses = [cluster.scheduler.address, *cluster.scheduler_info()["workers"]]
    assert len(addresses) == 3 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)


def test_plate_matches_single_process_and_reports_failures(tmp_path, plate, checkpoint, cluster):
    folder, images = plate
    out = tmp_path / "out"
    seen = []
    results = batch.deblur_files(
        [str(folder / "*.tif")], out, checkpoint, client=cluster, threads=1, on_result=seen.append
    )
    assert seen == results and len(results) == WELLS + 1
    status = {os.path.basename(r["input"]): r for r in results}
    assert status["broken.tif"]["status"] == "failed" and "truncated" in status["broken.tif"]["error"]
    model = load_model(checkpoint, device="cpu")
    torch.set_num_threads(1)
    for name, image in images.items():
        assert status[name]["status"] == "done"
        np.testing.assert_array_equal(tifffile.imread(out / name), deblur(image, model, threads=1))
        assert json.loads((out / (name + ".done")).read_text())["output_size"] == (out / name).stat().st_size
    loads = {}
    for r in results:
        loads[r["pid"]] = max(loads.get(r["pid"], 0), r["model_loads"])
    assert set(loads.values()) == {1}  # each worker loaded the model once, whatever it ran
    assert not (out / "broken.tif").exists() and not list(out.glob(".*"))

    # a re-run skips what is complete, redoes what is not, and retries the failure
    before = {n: (out / n).stat().st_mtime_ns for n in images}
    (out / "w1.tif.done").unlink()  # as if interrupted between the image and its sidecar
    (out / "w2.tif").write_bytes(b"II*\x00 half")  # a damaged output: size no longer matches
    again = {
        os.path.basename(r["input"]): r["status"]
        for r in batch.deblur_files([str(folder)], out, checkpoint, client=cluster, threads=1)
    }
    assert again == {
        "w0.tif": "skipped",
        "w3.tif": "skipped",
        "w1.tif": "done",
        "w2.tif": "done",
        "broken.tif": "failed",
    }
    assert (out / "w0.tif").stat().st_mtime_ns == before["w0.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / "w2.tif"), deblur(images["w2.tif"], model, threads=1))

    # changed options or a changed input mean a different job: redone
    redo = batch.deblur_files(
        [str(folder / "w0.tif"), str(folder / "w3.tif")], out, checkpoint, client=cluster, threads=1, tile=64
    )
    assert [r["status"] for r in redo] == ["done", "done"]


def test_cli_plate_exit_status_and_one_line_per_failure(tmp_path, plate, checkpoint, cluster, capsys):
    folder, _ = plate
    out = tmp_path / "out"
    argv = ["deblur", str(folder / "*.tif"), "-o", str(out), "--model", str(checkpoint), "--threads", "1",
            "--scheduler", cluster.scheduler.address, "-q"]  # fmt: skip
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    failed = [line for line in lines if line.startswith("dgno: failed: ")]
    assert len(failed) == 1 and "broken.tif" in failed[0]
    assert "4 written, 0 skipped" in lines[-1] and "1 failed" in lines[-1]
    assert sorted(p.name for p in out.glob("*.tif")) == [f"w{i}.tif" for i in range(WELLS)]
    (folder / "broken.tif").unlink()
    assert main(argv) == 0  # everything complete: nothing to do, success
    assert capsys.readouterr().err == ""


def test_streamed_compressed_tiffs_on_the_cluster(tmp_path, plate, checkpoint, cluster):
    """Big inputs are streamed on the workers: the lazy reader of a compressed (LZW) TIFF cannot be
    pickled, so its bands must be read in the worker itself, not through the cluster."""
    folder, images = plate
    (folder / "broken.tif").unlink()
    out = tmp_path / "out"
    results = batch.deblur_files([str(folder)], out, checkpoint, client=cluster, threads=1, stream=True)
    assert [r["status"] for r in results] == ["done"] * WELLS, results
    model = load_model(checkpoint, device="cpu")
    torch.set_num_threads(1)
    for name, image in images.items():
        np.testing.assert_array_equal(tifffile.imread(out / name), deblur(image, model, threads=1))


def test_inputs_outputs_and_refusals(tmp_path, checkpoint):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        tifffile.imwrite(tmp_path / d / "x.tif", np.zeros((16, 16), np.uint16))
    assert batch.is_batch([str(tmp_path / "a" / "*.tif")]) and batch.is_batch([str(tmp_path / "a")])
    assert not batch.is_batch([str(tmp_path / "a" / "x.tif")])
    assert batch.output_name(tmp_path / "s.ome.zarr") == "s.ome.tif"
    assert batch.output_name(tmp_path / "s.ome.tiff") == "s.ome.tiff"
    with pytest.raises(InputError, match="both be written"):
        batch.deblur_files([str(tmp_path / "*" / "x.tif")], tmp_path / "out", checkpoint)
    with pytest.raises(InputError, match="no files match"):
        batch.deblur_files([str(tmp_path / "*.nd2")], tmp_path / "out", checkpoint)
    with pytest.raises(InputError, match="overwrite the input"):
        batch.deblur_files([str(tmp_path / "a")], tmp_path / "a", checkpoint)
    with pytest.raises(InputError, match="folder"):
        batch.deblur_files([str(tmp_path / "a")], tmp_path / "out.tif", checkpoint)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tif").exists()


def _descriptors_under(path) -> list[str]:
    """This process's open file descriptors that point at ``path`` or inside it (Linux /proc)."""
    path = str(path)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target == path or target.startswith(path + os.sep):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")
@pytest.mark.parametrize("kind", ["plain", "zlib", "zarr"])
@pytest.mark.parametrize("stream", [True, False])
def test_deblur_file_closes_its_input(tmp_path, checkpoint, kind, stream):
    """A worker goes through a whole plate in one process: no descriptor may stay open per input,
    after a success or a failure, whether or not the garbage collector has run."""
    import gc

    from napari_dgno.io import write_zarr_atomic

    image = (np.random.default_rng(1).random((40, 48)) * 3000).astype(np.uint16)
    if kind == "zarr":
        src = tmp_path / "in.ome.zarr"
        write_zarr_atomic(src, image)
    else:
        src = tmp_path / "in.tif"
        tifffile.imwrite(src, image, compression=None if kind == "plain" else "zlib")
    model = load_model(checkpoint, device="cpu")
    gc.disable()  # a leaked handle must not be hidden by a collection that happens to run
    try:
        report = batch.deblur_file(src, tmp_path / "out.tif", model, stream=stream, threads=1)
        assert report.shape == image.shape and (tmp_path / "out.tif").is_file()
        assert _descriptors_under(src) == []
        with pytest.raises(InputError, match="does not exist"):  # fails after the input was opened
            batch.deblur_file(src, tmp_path / "missing" / "out.tif", model, stream=stream, threads=1)
        assert _descriptors_under(src) == []
    finally:
        gc.enable()


def test_a_small_file_is_read_whole_and_costs_no_dask_import(tmp_path):
    """0.7 s of a 2.4 s `dgno deblur` call on a small image was importing dask for a lazy read."""
    import subprocess
    import sys

    src = tmp_path / "small.tif"
    tifffile.imwrite(src, (np.random.default_rng(0).random((64, 64)) * 4000).astype(np.uint16))
    code = (
        "import sys\n"
        "from napari_dgno.cli import main\n"
        f"assert main(['deblur', {str(src)!r}, '--quiet']) == 0\n"
        "print('dask' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False"
    assert tifffile.imread(tmp_path / "small-deblurred.tif").shape == (64, 64)


def test_lazy_reads_follow_a_size_threshold(tmp_path):
    from napari_dgno.io.tiff import LAZY_BYTES, lazy_above, read_image

    assert lazy_above(None, LAZY_BYTES + 1) and not lazy_above(None, LAZY_BYTES)
    assert lazy_above(True, 0) and not lazy_above(False, 1 << 40)
    assert lazy_above(100, 101) and not lazy_above(100, 100)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint16))  # 2 kB
    assert isinstance(read_image(path, lazy=2048)[0], np.ndarray)
    assert not isinstance(read_image(path, lazy=2047)[0], np.ndarray)
