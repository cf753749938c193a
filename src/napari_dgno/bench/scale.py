"""``dgno bench --scale``: time and peak memory against image size and against cluster workers.

Why: "does it fit, and how long will my slide / plate take" is the question before a big run. Each
image size runs in a fresh subprocess (so its ``ru_maxrss`` is its own peak, not the largest seen so
far) through the streaming path ``dgno deblur`` takes for big inputs: a lazily read tiled TIFF in,
a TIFF written row band by row band out. Small sizes are also run in memory, and the two outputs
compared. The plate part deblurs N images on a local cluster with 1, 2, ... workers.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_dgno.batch import _client, deblur_file, deblur_files
from napari_dgno.bench.report import _finite, _plain_table
from napari_dgno.bench.run import _cpu_name
from napari_dgno.io import save_checkpoint
from napari_dgno.io.atomic import atomic_path
from napari_dgno.io.checkpoint import checkpoint_paths
from napari_dgno.model import build_model, preset_config
from napari_dgno.registry import default_model_name, load_model, locate_model

SIZES = (512, 1024, 2048, 4096, 8192)
WORKER_COUNTS = (1, 2)
VERIFY_MAX = 2048  # sizes up to this are also run in memory and compared

Log = Callable[[str], None]


def _maxrss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------------------------------
# Inputs and the model


def write_test_image(path: Path, size: int, seed: int = 0, tile: int = 256) -> Path:
    """A ``size``² uint16 tiled TIFF made tile by tile (memory O(tile)), cells-like blobs + noise."""
    import tifffile

    rng = np.random.default_rng(seed)
    phase = rng.random(4) * 100

    def tiles():
        for y0 in range(0, size, tile):
            for x0 in range(0, size, tile):
                yy, xx = np.mgrid[y0 : y0 + tile, x0 : x0 + tile].astype(np.float32)
                blobs = np.sin(yy / 23 + phase[0]) * np.cos(xx / 29 + phase[1])
                blobs += 0.5 * np.sin((xx + yy) / 61 + phase[2])
                noise = np.random.default_rng((seed, y0, x0)).normal(0, 30, (tile, tile))
                yield np.clip(1500 + 900 * blobs + noise, 0, 4095).astype(np.uint16)

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype="uint16", tile=(tile, tile), compression="zlib")
    return path


def resolve_model(model, preset: str, workdir: Path, log: Log) -> tuple[str, str]:
    """``(checkpoint path, description)``: the model asked for, else the shipped default, else a
    random-init network of ``preset`` (speed and memory do not depend on the weights)."""

    if model is not None:
        path = checkpoint_paths(locate_model(model))[0]
        return str(path), f"{model}"
    if default_model_name() is not None:
        path = checkpoint_paths(locate_model(None))[0]
        return str(path), f"shipped default ({default_model_name()})"
    import torch

    log(f"no shipped model: using a random-init '{preset}' network")
    torch.manual_seed(0)
    net = build_model("dgno", preset_config(preset))
    base = workdir / f"random-{preset}"
    save_checkpoint(base, net, {"preset": preset, "name": f"random-{preset}"})
    return str(base) + ".safetensors", f"random-init {preset} preset"


# ---------------------------------------------------------------------------------------------------
# One size in a fresh process


def child_main(argv: list[str]) -> int:
    """``python -m napari_dgno.bench.scale INPUT OUTPUT MODEL MODE TILE THREADS``: one run, JSON out."""
    src, dst, model_path, mode, tile, threads = argv

    model = load_model(model_path, device="cpu")
    base = _maxrss_mb()
    started = time.perf_counter()
    report = deblur_file(
        Path(src),
        Path(dst),
        model,
        stream=mode == "stream",
        tile=int(tile) if tile != "auto" else "auto",
        threads=int(threads),
    )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": _maxrss_mb(),
                "model_rss_mb": base,
                "tile": report.tile,
                "overlap": report.overlap,
                "tiles": report.tiles_per_plane * report.planes,
                "rows_read": report.rows_read,
                "rows_blended": report.rows_blended,
            }
        )
    )
    return 0


def _run_child(src: Path, dst: Path, model_path: str, mode: str, tile, threads: int) -> dict:
    cmd = [sys.executable, "-m", "napari_dgno.bench.scale", str(src), str(dst), model_path, mode]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    done = subprocess.run([*cmd, str(tile), str(threads)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        raise RuntimeError(f"scale run failed ({mode}, {src.name}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# The report


@dataclass
class ScaleReport:
    meta: dict
    sizes: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(value, spec: str) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else format(value, spec)
    )


SIZE_COLUMNS = (
    "size",
    "MPx",
    "tiles",
    "seconds",
    "s/MPx",
    "peak RSS MB (stream)",
    "after model load MB",
    "peak RSS MB (in memory)",
    "max abs diff stream vs memory",
)
WORKER_COLUMNS = (
    "workers",
    "threads/worker",
    "images",
    "cluster start s",
    "seconds",
    "images/min",
    "speed-up",
    "peak RSS MB/worker",
)


def _size_cells(r: dict) -> list[str]:
    seconds = _fmt(r.get("seconds"), ".1f")
    if r.get("extrapolated"):
        seconds = f"~{_fmt(r['extrapolated_seconds'], '.0f')} (extrapolated)"
    return [
        f"{r['size']}²",
        _fmt(r["mpx"], ".2f"),
        _fmt(r.get("tiles"), "d"),
        seconds,
        _fmt(r.get("s_per_mpx"), ".2f"),
        _fmt(r.get("peak_rss_mb"), ".0f"),
        _fmt(r.get("model_rss_mb"), ".0f"),
        _fmt(r.get("memory_peak_rss_mb"), ".0f"),
        _fmt(r.get("max_abs_diff"), ".2g"),
    ]


def _worker_cells(r: dict) -> list[str]:
    return [
        str(r["workers"]),
        str(r["threads"]),
        str(r["images"]),
        _fmt(r["startup_seconds"], ".1f"),
        _fmt(r["seconds"], ".1f"),
        _fmt(r["images_per_min"], ".1f"),
        _fmt(r.get("speedup"), ".2f"),
        _fmt(r.get("worker_peak_rss_mb"), ".0f"),
    ]


def _header(report: ScaleReport) -> list[str]:
    m = report.meta
    return [
        f"Model: {m['model']}; tile {m['tile']} px; CPU: {m['cpu']} ({m['cores']} cores), "
        f"{m['threads']} torch thread(s) per size run; torch {m['torch']}; {m['date']}.",
        "Each size ran in a fresh process on the streaming path (tiled TIFF read lazily, TIFF written "
        "row band by row band); peak RSS is that process's ru_maxrss, torch and the model included.",
        f"Plate: {m['plate_images']} images of {m['plate_size']}² on a local dask cluster (127.0.0.1); "
        "seconds from submitting the files to the last output, each worker's one model load included.",
    ]


def to_markdown(report: ScaleReport) -> str:
    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])

    parts = ["## Scale", "", *[f"{line}  " for line in _header(report)], ""]
    parts += ["### Time and memory against image size", ""]
    parts += [table(SIZE_COLUMNS, [_size_cells(r) for r in report.sizes]), ""]
    if report.workers:
        parts += ["### A plate against cluster workers", ""]
        parts += [table(WORKER_COLUMNS, [_worker_cells(r) for r in report.workers]), ""]
    return "\n".join(parts)


def to_plain(report: ScaleReport) -> str:
    parts = [*_header(report), "", _plain_table(list(SIZE_COLUMNS), [_size_cells(r) for r in report.sizes])]
    if report.workers:
        parts += ["", _plain_table(list(WORKER_COLUMNS), [_worker_cells(r) for r in report.workers])]
    return "\n".join(parts) + "\n"


def write_scale_report(report: ScaleReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "scale.md", out_dir / "scale.json"
    text = json.dumps(_finite(report.to_dict()), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    for path, content in ((md, to_markdown(report)), (js, text)):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(content, encoding="utf-8")
    return md, js


# ---------------------------------------------------------------------------------------------------
# The whole run


def _compare(a: Path, b: Path) -> float:
    import tifffile

    return float(np.max(np.abs(tifffile.imread(a) - tifffile.imread(b))))


def run_sizes(sizes, model_path: str, workdir: Path, *, tile, threads: int, verify_max: int,
              max_seconds: float | None, log: Log) -> list[dict]:  # fmt: skip
    rows, rate = [], None
    for size in sizes:
        mpx = size * size / 1e6
        row: dict = {"size": size, "mpx": mpx}
        if max_seconds is not None and rate is not None and rate * mpx > max_seconds:
            row.update(extrapolated=True, extrapolated_seconds=rate * mpx)
            log(f"{size}²: skipped, would take ~{rate * mpx:.0f} s (over --max-seconds)")
            rows.append(row)
            continue
        src = write_test_image(workdir / f"in-{size}.tif", size, seed=size)
        dst = workdir / f"out-{size}.tif"
        log(f"{size}²: streaming run ...")
        row.update(_run_child(src, dst, model_path, "stream", tile, threads))
        row["s_per_mpx"] = row["seconds"] / mpx
        rate = row["s_per_mpx"]
        if size <= verify_max:
            log(f"{size}²: in-memory run for comparison ...")
            mem = _run_child(src, workdir / f"mem-{size}.tif", model_path, "memory", tile, threads)
            row.update(memory_seconds=mem["seconds"], memory_peak_rss_mb=mem["peak_rss_mb"])
            row["max_abs_diff"] = _compare(dst, workdir / f"mem-{size}.tif")
            (workdir / f"mem-{size}.tif").unlink()
        log(f"{size}²: {row['seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB")
        src.unlink()
        dst.unlink()
        rows.append(row)
    return rows


def run_workers(worker_counts, model_path: str, workdir: Path, *, images: int, size: int, tile,
                log: Log) -> list[dict]:  # fmt: skip

    plate = workdir / "plate"
    plate.mkdir(exist_ok=True)
    for i in range(images):
        write_test_image(plate / f"well-{i:02d}.tif", size, seed=i)
    rows = []
    for n in worker_counts:
        threads = max(1, (os.cpu_count() or 1) // n)
        log(f"plate of {images} x {size}² on {n} worker(s) x {threads} thread(s) ...")
        started = time.perf_counter()
        with _client(None, n) as client:
            client.wait_for_workers(n)
            startup = time.perf_counter() - started
            started = time.perf_counter()
            results = deblur_files([str(plate)], workdir / f"plate-out-{n}", model_path, client=client,
                                   threads=threads, device="cpu", tile=tile, force=True)  # fmt: skip
            seconds = time.perf_counter() - started
        failed = [r for r in results if r["status"] != "done"]
        if failed:
            raise RuntimeError(f"plate run failed: {failed[0].get('error')}")
        rows.append(
            {
                "workers": n,
                "threads": threads,
                "images": images,
                "size": size,
                "startup_seconds": startup,
                "seconds": seconds,
                "images_per_min": 60 * images / seconds,
                "worker_peak_rss_mb": max(r.get("peak_rss_mb", 0.0) for r in results),
            }
        )
    for r in rows:
        r["speedup"] = rows[0]["seconds"] / r["seconds"]
    return rows


def run_scale(
    *,
    sizes=SIZES,
    worker_counts=WORKER_COUNTS,
    plate_images: int = 8,
    plate_size: int = 1024,
    model=None,
    preset: str = "small",
    tile="auto",
    threads: int | None = None,
    verify_max: int = VERIFY_MAX,
    max_seconds: float | None = None,
    out: Path | None = None,
    log: Log = lambda message: None,
) -> ScaleReport:
    """Measure time and peak memory against size, then against workers; write scale.md/.json."""
    import torch

    threads = threads or os.cpu_count() or 1
    tile = "auto" if str(tile) == "auto" else int(tile)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dgno-scale-") as tmp:
        workdir = Path(tmp)
        model_path, model_desc = resolve_model(model, preset, workdir, log)
        meta = {
            "model": model_desc,
            "model_path": model_path,
            "tile": tile,
            "threads": threads,
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "date": _dt.date.today().isoformat(),
            "plate_images": plate_images,
            "plate_size": plate_size,
        }
        report = ScaleReport(meta=meta)
        report.sizes = run_sizes(sizes, model_path, workdir, tile=tile, threads=threads,
                                 verify_max=verify_max, max_seconds=max_seconds, log=log)  # fmt: skip
        if worker_counts and plate_images:
            report.workers = run_workers(worker_counts, model_path, workdir, images=plate_images,
                                         size=plate_size, tile=tile, log=log)  # fmt: skip
    report.meta["seconds"] = time.perf_counter() - started
    if out is not None:
        write_scale_report(report, out)
    return report


if __name__ == "__main__":  # the per-size child process
    sys.exit(child_main(sys.argv[1:]))
