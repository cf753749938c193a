"""``dgno bench --scale``: per-size runs in fresh processes with their own peak memory, the plate on
a local cluster, extrapolation past a time budget, Markdown + JSON reports."""

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno.bench import scale
from napari_dgno.cli import main
from napari_dgno.io import read_image, save_checkpoint
from napari_dgno.model import build_model, preset_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(base, build_model("dgno", preset_config("tiny")), {"preset": "tiny"})
    return str(base) + ".safetensors"


def test_test_image_is_tiled_and_deterministic(tmp_path):
    a = scale.write_test_image(tmp_path / "a.tif", 300, seed=3, tile=128)
    b = scale.write_test_image(tmp_path / "b.tif", 300, seed=3, tile=128)
    with tifffile.TiffFile(a) as tif:
        assert tif.pages[0].is_tiled and tif.series[0].shape == (300, 300)
    np.testing.assert_array_equal(read_image(a)[0], read_image(b)[0])


def test_scale_report(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    messages = []
    report = scale.run_scale(
        sizes=(128, 256, 4096),
        worker_counts=(1,),
        plate_images=2,
        plate_size=64,
        model=checkpoint,
        threads=1,
        tile=64,
        verify_max=128,
        max_seconds=60,
        out=tmp_path,
        log=messages.append,
    )
    small, medium, huge = report.sizes
    for row in (small, medium):
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["model_rss_mb"] > 50
        assert row["rows_read"] <= 64 + 256 and row["tiles"] > 1  # a band + one 256 px tile row
    assert small["max_abs_diff"] == 0 and "max_abs_diff" not in medium  # streamed == in memory
    assert huge["extrapolated"] and huge["extrapolated_seconds"] > 60 and "seconds" not in huge
    (plate,) = report.workers
    assert plate["workers"] == 1 and plate["images"] == 2 and plate["speedup"] == 1.0
    md = (tmp_path / "scale.md").read_text()
    assert "| 256² |" in md and "(extrapolated)" in md and "| workers |" in md
    data = json.loads((tmp_path / "scale.json").read_text())
    assert data["meta"]["model"] == checkpoint and len(data["sizes"]) == 3
    assert any("skipped" in m for m in messages)


def test_cli_flags_reach_run_scale(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return scale.ScaleReport(
            meta={
                "model": "m",
                "tile": "auto",
                "cpu": "c",
                "cores": 2,
                "threads": 1,
                "torch": "t",
                "date": "d",
                "plate_images": 0,
                "plate_size": 0,
            },  # fmt: skip
        )

    monkeypatch.setattr(scale, "run_scale", fake)
    argv = [
        "bench",
        "--scale",
        "--sizes",
        "512,1024",
        "--worker-counts",
        "",
        "--model",
        "x",
        "--max-seconds",
        "5",
    ]
    assert main(argv) == 0
    assert seen["sizes"] == (512, 1024) and seen["worker_counts"] == () and seen["model"] == "x"
    assert seen["max_seconds"] == 5 and "size" in capsys.readouterr().out
