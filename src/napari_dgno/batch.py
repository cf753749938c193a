"""Deblur many files: one file end to end (:func:`deblur_file`), and a plate on a dask cluster
(:func:`deblur_files`, behind ``dgno deblur "plate/*.tif" -o OUTDIR``).

Why a cluster: a plate is hundreds of independent images, so the work spreads over worker
processes (a local cluster bound to 127.0.0.1, or any ``dask.distributed`` scheduler whose workers
see the same files). Each worker loads the model once and keeps it; each output is written
atomically by the worker that made it, followed by a ``NAME.tif.done`` JSON sidecar. A re-run skips
outputs whose sidecar matches (same input file, model and options); a damaged file is reported and
the rest go on.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DGNOError, InputError, one_line
from .inference import engine
from .io import atomic_path, is_zarr_path, open_image, output_format, write_image_atomic
from .io.checkpoint import checkpoint_paths, read_metadata
from .io.formats import COMMON_SUFFIXES, TIFF_SUFFIXES, VENDOR_PLUGINS, suffix_of
from .options import DeblurOptions, DeblurReport
from .registry import load_model, locate_model

STREAM_BYTES = 128 << 20  # float32 results above this are streamed to disk row band by row band
# Inputs up to this are read whole: a small call then never imports dask (0.7 s of a 2.4 s call).
EAGER_BYTES = 64 << 20
DONE_SUFFIX = ".done"
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, *COMMON_SUFFIXES, *VENDOR_PLUGINS)  # what a folder's listing takes
DEFAULT_SUFFIX = "-deblurred"
GLOB_CHARS = "*?["

# ---------------------------------------------------------------------------------------------------
# One file


def result_nbytes(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) * 4


def _local_dask(image):
    """Dask's local threads for a lazy input (see :func:`deblur_file`); nothing for a numpy one."""
    if isinstance(image, np.ndarray):
        return contextlib.nullcontext()
    import dask

    return dask.config.set(scheduler="threads")


def deblur_file(
    src,
    dst,
    model,
    options: DeblurOptions | None = None,
    *,
    stream=None,
    progress=None,
    on_open=None,
    **keywords,
) -> DeblurReport:
    """Read ``src`` (TIFF / OME-Zarr), deblur it, write ``dst`` (TIFF / OME-Zarr) atomically.

    ``stream``: None streams when the float32 result is over 128 MiB or ``dst`` is a Zarr (memory
    then stays one band of tiles); True / False force it. ``options`` (and keyword arguments on top
    of them, as for :func:`~napari_dgno.deblur`) say how to run. ``on_open(info)`` is called with the
    input's :func:`~napari_dgno.io.read_image` info once it is open. Returns the engine's report with
    ``shape`` set. The input file is closed when this returns or raises (a worker runs through a
    whole plate in one process).

    The lazy input is read here, with dask's local threads: inside a dask worker (or beside a
    running ``Client``) the default scheduler is the cluster, which would ship every band read over
    the network, and fails outright for a compressed TIFF (its open reader cannot be pickled).
    """
    options = (options or DeblurOptions()).overridden(**keywords)
    with open_image(src, lazy=EAGER_BYTES) as (image, meta), _local_dask(image):
        if on_open is not None:
            on_open(meta)
        if stream is None:
            stream = output_format(dst) == "zarr" or result_nbytes(image.shape) > STREAM_BYTES
        if stream:
            _, report = engine.restore_to(image, dst, model, options, metadata=meta, progress=progress)
        elif isinstance(image, np.ndarray):  # small, or a format that is always read whole (PNG ...)
            restored, report = engine.restore(image, model, options, progress=progress)
            write_image_atomic(dst, restored, metadata=meta)
        else:
            with open_image(src) as (image, meta):  # small: whole file in memory, read eagerly
                restored, report = engine.restore(image, model, options, progress=progress)
            write_image_atomic(dst, restored, metadata=meta)
    report.shape = tuple(int(s) for s in image.shape)
    return report


# ---------------------------------------------------------------------------------------------------
# Which files, where to


def is_batch(inputs: list[str]) -> bool:
    """Several inputs, a folder (not a Zarr store) or a glob pattern make a batch."""

    if len(inputs) != 1:
        return True
    text = str(inputs[0])
    path = Path(text)
    if path.is_dir() and not is_zarr_path(path):
        return True
    return not path.exists() and any(c in text for c in GLOB_CHARS)


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files named, matched by glob patterns (``**`` too) or found in folders (TIFFs and Zarrs)."""

    found: list[Path] = []
    for text in inputs:
        path = Path(str(text))
        if path.is_dir() and not is_zarr_path(path):
            found += sorted(
                p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES) or is_zarr_path(p)
            )
        elif path.exists():
            found.append(path)
        elif any(c in str(text) for c in GLOB_CHARS):
            matches = sorted(Path(p) for p in glob.glob(str(text), recursive=True))
            if not matches:
                raise InputError(f"no files match {text}")
            found += matches
        else:
            raise InputError(f"no such file: {path}")
    found = [p for p in found if not p.name.startswith(".")]  # temporary files of running writes
    if not found:
        raise InputError("no input images found")
    return list(dict.fromkeys(found))


def output_name(src: Path, tag: str = "") -> str:
    """``a.tif`` -> ``a.tif``, ``a.ome.tif`` -> ``a.ome.tif``, ``a.ome.zarr`` / ``a.czi`` ->
    ``a.ome.tif`` (OME keeps their pixel sizes), ``a.png`` -> ``a.tif``; ``tag`` goes before the
    suffix (``a-deblurred.tif``)."""
    name = src.name
    lower = name.lower()
    for suffix in sorted((".ome.zarr", ".zarr", *TIFF_SUFFIXES), key=len, reverse=True):
        if lower.endswith(suffix):
            stem, kept = name[: -len(suffix)], name[-len(suffix) :]  # a TIFF keeps its own spelling
            if suffix in (".zarr", ".ome.zarr", ".btf", ".tf8", ".lsm"):
                kept = ".ome.tif" if suffix == ".ome.zarr" else ".tif"
            return stem + tag + kept
    ome = suffix_of(src) in VENDOR_PLUGINS
    return Path(name).stem + tag + (".ome.tif" if ome else ".tif")


def default_output(src: Path) -> Path:
    """``INPUT-deblurred.tif`` beside the input (see :func:`output_name`)."""
    return src.parent / output_name(src, DEFAULT_SUFFIX)


def plan_outputs(sources: list[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs; two inputs may not write the same output."""
    pairs, seen = [], {}
    for src in sources:
        dst = out_dir / output_name(src)
        if dst.resolve() == src.resolve():
            raise InputError(f"refusing to overwrite the input {src}; choose another output folder")
        if dst in seen:
            raise InputError(f"{seen[dst]} and {src} would both be written to {dst}; rename one")
        seen[dst] = src
        pairs.append((src, dst))
    return pairs


# ---------------------------------------------------------------------------------------------------
# Done sidecars: how a re-run knows an output is complete


def done_path(dst: Path) -> Path:
    return dst.with_name(dst.name + DONE_SUFFIX)


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def job_key(src: Path, model_path: str, options: DeblurOptions) -> dict:
    """What must match for an existing output to count as this job's result."""
    return {
        "input": _fingerprint(src),
        "model": _fingerprint(Path(model_path)),
        "options": options.fingerprint(),
    }


def is_complete(src: Path, dst: Path, key: dict) -> bool:
    """The output exists, has the size recorded in its sidecar, and was made from this job."""
    sidecar = done_path(dst)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        return (
            dst.is_file()
            and record.get("output_size") == dst.stat().st_size
            and record.get("key") == json.loads(json.dumps(key))
        )
    except (OSError, ValueError, AttributeError):
        return False


def _write_done(dst: Path, key: dict, info: dict) -> None:
    record = {
        "key": key,
        "output": str(dst),
        "output_size": dst.stat().st_size,
        "shape": list(info.get("shape", ())),
        "seconds": info.get("seconds"),
        "device": info.get("device"),
        "streamed": info.get("streamed"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_path(done_path(dst)) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# The worker side

_WORKER_MODELS: dict = {}  # (checkpoint, device) -> DeblurModel, one load per worker process
MODEL_LOADS = {"count": 0}


def _worker_model(model_path: str, device: str):
    key = (model_path, device)
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = load_model(model_path, device=device)
        MODEL_LOADS["count"] += 1
    return _WORKER_MODELS[key]


def process_file(src: str, dst: str, model_path: str, options: DeblurOptions, stream: bool | None) -> dict:
    """Run on a worker: deblur one file, write it and its sidecar. Never raises for a bad file."""
    started = time.perf_counter()
    src_p, dst_p = Path(src), Path(dst)
    result = {"input": src, "output": dst, "pid": os.getpid()}
    try:
        model = _worker_model(model_path, options.device)
        report = deblur_file(src_p, dst_p, model, options, stream=stream)
        report.seconds = time.perf_counter() - started
        _write_done(dst_p, job_key(src_p, model_path, options), report.to_dict())
        result.update(status="done", seconds=report.seconds, shape=list(report.shape))
    except DGNOError as err:
        result.update(status="failed", error=one_line(err))
    except MemoryError:
        result.update(status="failed", error="out of memory; try a smaller --tile or fewer --workers")
    except Exception as err:  # anything else is still one file's failure, not the plate's
        result.update(status="failed", error=f"{type(err).__name__}: {one_line(err)}")
    result["model_loads"] = MODEL_LOADS["count"]
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _peak_rss_mb() -> float | None:
    """The worker's peak resident memory so far (for ``dgno bench --scale``)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------------------------------
# The client side


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int):
    """A client of ``scheduler``, or of a local cluster on 127.0.0.1 (no other address is bound)."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def default_workers(files: int) -> int:
    return max(1, min(files, (os.cpu_count() or 2) // 2))


def deblur_files(
    inputs: Iterable[str],
    out_dir,
    model=None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    element_size: int | None = None,
    flux: str | None = None,
    tile="auto",
    overlap="auto",
    self_ensemble: bool = False,
    stream: bool | None = None,
    force: bool = False,
    on_result: Callable[[dict], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    client=None,
    options: DeblurOptions | None = None,
) -> list[dict]:
    """Deblur every input file into ``out_dir`` on a dask cluster; one result dict per file.

    inputs: files, folders or glob patterns (``"plate/*.tif"``). Each ``x.tif`` becomes
        ``out_dir/x.tif`` (Zarr inputs become ``.tif``). out_dir is created if needed.
    scheduler: a ``dask.distributed`` address; None starts a local cluster of ``workers`` processes
        (default: half the cores) on 127.0.0.1. ``client``: an existing client instead of either.
    threads: torch threads per worker (default: cores / workers on a local cluster).
    self_ensemble: average the 8 rotations / mirror images of every tile (~8x the time).
    options: a :class:`DeblurOptions` for all files; the keyword options above go on top of it.
    force: redo files whose output is already complete (otherwise they are ``"skipped"``).
    on_result: called with each result as it arrives (``status`` is done, skipped or failed, with
        ``error`` for failures). A failed file never stops the others.
    on_total: called once with the number of files (results to come), before the first result.
    """

    out_dir = Path(out_dir)
    if out_dir.name.lower().endswith((".tif", ".tiff", ".zarr")):
        raise InputError(f"with several inputs, -o must be a folder, not {out_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; with several inputs -o must be a folder")
    pairs = plan_outputs(expand_inputs(inputs), out_dir)
    model_path = str(checkpoint_paths(locate_model(model))[0].resolve())
    read_metadata(checkpoint_paths(model_path)[1])  # a bad --model fails once, here, not per file
    if not Path(model_path).is_file():
        raise CheckpointError(f"checkpoint weights {model_path} are missing")
    out_dir.mkdir(parents=True, exist_ok=True)
    options = (options or DeblurOptions()).overridden(
        device=device,
        element_size=element_size,
        flux=flux,
        tile=tile,
        overlap=overlap,
        threads=threads,
        self_ensemble=self_ensemble,
    )

    results: list[dict] = []
    if on_total is not None:
        on_total(len(pairs))

    def report(result: dict) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    todo = []
    for src, dst in pairs:
        if not force and is_complete(src, dst, job_key(src, model_path, options)):
            report({"input": str(src), "output": str(dst), "status": "skipped"})
        else:
            todo.append((src, dst))
    if not todo:
        return results
    n_workers = workers or default_workers(len(todo))
    if options.threads is None and scheduler is None and client is None:
        options = options.replace(threads=max(1, (os.cpu_count() or 1) // n_workers))
    context = contextlib.nullcontext(client) if client is not None else _client(scheduler, n_workers)
    from distributed import as_completed

    with context as active:
        futures = {
            active.submit(process_file, str(src), str(dst), model_path, options, stream, pure=False): (
                src,
                dst,
            )
            for src, dst in todo
        }
        for future in as_completed(futures):
            src, dst = futures[future]
            try:
                result = future.result()
            except Exception as err:  # the worker died (killed, out of memory ...)
                result = {"input": str(src), "output": str(dst), "status": "failed"}
                result["error"] = f"worker lost: {type(err).__name__}: {one_line(err)}"
            report(result)
    return results
