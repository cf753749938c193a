"""The deblur engine: restore images of any size and dimensionality with a model from the registry.

``deblur`` is what the CLI, the widgets and scripts all call. It walks the 2-D planes (Y, X are the
last two axes), normalises each plane by its own percentiles (or, with ``normalize="stack"``, the
whole input by one fit), tiles each plane on the element grid, and maps the result back to the
input's intensity units. Every tile of a plane is in the same units.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..devices import autocast_context, cpu_threads
from ..errors import Cancelled, DGNOError, InputError
from ..io.stream import open_image_writer
from ..model import FLUX_VARIANTS
from ..model.config import check_element_size
from ..normalize import Normalization
from ..options import DeblurOptions, DeblurReport
from ..registry import (  # noqa: F401  (re-exported: the engine's public names before the registry)
    DeblurModel,
    check_default_flux,
    default_model_name,
    find_model,
    list_models,
    load_model,
    locate_model,
    resolve_model,
    shipped_model_dir,
    user_model_dir,
)
from ..tiling import BandBlender, auto_overlap, auto_tile, halve_tile, plan_tiles, round_up, tile_rows
from .ensemble import dihedral_average
from .inputs import MAX_NORMALISED, RowReader, check_image, fit_input

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


# ---------------------------------------------------------------------------------------------------
# Model resolution and run-time options


def _runtime_options(dm: DeblurModel, element_size, flux) -> tuple[int | None, str | None]:
    config = getattr(dm.net, "config", None)
    if not hasattr(config, "element_size"):  # NAFNet or a plain module: no elements, no flux
        return None, None
    e = dm.element_size if element_size is None else element_size
    f = dm.flux if flux is None else flux
    if isinstance(e, float) and e.is_integer():
        e = int(e)
    try:
        check_element_size(e, config.levels - 1)
    except ValueError as err:
        raise InputError(str(err)) from None
    if f not in FLUX_VARIANTS:
        raise InputError(f"flux must be one of {', '.join(FLUX_VARIANTS)}, got {f!r}")
    return e, f


@functools.lru_cache(maxsize=32)
def _accepts_options(forward_type) -> bool:
    try:
        params = inspect.signature(forward_type.forward).parameters
    except (TypeError, ValueError):
        return False
    return "element_size" in params and "flux" in params


def _pad_multiple(net: nn.Module, element_size) -> int:
    fn = getattr(net, "pad_multiple", None)
    return int(fn(element_size)) if callable(fn) else 1


def _min_tile(net: nn.Module) -> int:
    fn = getattr(net, "min_tile", None)
    return int(fn()) if callable(fn) else 0


def _tile_sizes(
    options: DeblurOptions, plane_shape, multiple: int, device: torch.device, min_tile: int = 0
) -> tuple[int, int]:
    """Tile and overlap in px, on the grid (``options`` has checked their bounds already). A tile
    below the network's ``min_tile`` is raised to it (the report says which tile ran): a smaller one
    cannot give the whole-image answer, and at 384 px its memory is a few tens of MB, so no memory
    limit needs it smaller."""
    if options.tile in ("auto", None):
        tile_px = max(auto_tile(plane_shape, multiple, device.type), round_up(min_tile, multiple))
    else:
        tile_px = round_up(max(options.tile, min_tile), multiple)
    if options.overlap in ("auto", None):
        return tile_px, auto_overlap(tile_px, multiple, min_tile)  # at most half the tile
    overlap_px = round_up(options.overlap, multiple)
    if overlap_px >= tile_px:
        raise InputError(
            f"overlap ({overlap_px} px) must be smaller than the tile ({tile_px} px; both are "
            f"rounded up to multiples of {multiple})"
        )
    return tile_px, overlap_px


# ---------------------------------------------------------------------------------------------------
# The engine


@dataclass
class _Job:
    """Everything decided before the first tile: the input view, model, options and normalisation."""

    arr: object
    lazy: bool
    dm: DeblurModel
    element_size: int | None
    flux: str | None
    multiple: int
    tile: int
    overlap: int
    kwargs: dict
    options: DeblurOptions
    # plane index -> (normalisation, constant value or None); key None: one fit for every plane
    norms: dict = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: {"rows_read": 0, "rows_blended": 0, "tiles_per_plane": 0})

    def plane_norm(self, idx: tuple) -> tuple[Normalization, float | None]:
        if None in self.norms:
            return self.norms[None]
        if idx not in self.norms:
            self.norms[idx] = fit_input(self.arr, self.lazy, idx)
        return self.norms[idx]


def _prepare(image, model, options: DeblurOptions, channel_axis=None) -> _Job:
    arr, lazy = check_image(image, channel_axis)
    plane_shape = tuple(int(s) for s in arr.shape[-2:])
    options.check_image(plane_shape)
    if model is None:  # the default was implied: never run it with a flux it was not trained with
        check_default_flux(options.flux)
    dm = resolve_model(model, options.device)
    e, f = _runtime_options(dm, options.element_size, options.flux)
    multiple = _pad_multiple(dm.net, e)
    tile_px, overlap_px = _tile_sizes(options, plane_shape, multiple, dm.device, _min_tile(dm.net))
    kwargs = {"element_size": e, "flux": f} if e is not None and _accepts_options(type(dm.net)) else {}
    job = _Job(arr, lazy, dm, e, f, multiple, tile_px, overlap_px, kwargs, options)
    if options.normalize == "stack" or arr.ndim == 2:
        job.norms[None] = fit_input(arr, lazy)
    return job


Emit = Callable[[tuple, int, np.ndarray], None]


def _execute(job: _Job, emit: Emit, progress, cancel) -> None:
    """Restore every plane band by band; ``emit(plane index, first row, rows)`` gets finished rows
    (float32, input units) top to bottom. After an out-of-memory retry a plane is emitted again
    from its first row, with smaller tiles."""
    arr, net, dev = job.arr, job.dm.net, job.dm.device
    height, width = (int(s) for s in arr.shape[-2:])
    planes = list(np.ndindex(*arr.shape[:-2]))
    tiles = plan_tiles((height, width), job.tile, job.overlap, job.multiple)
    total, done = len(tiles) * len(planes), 0

    def check_cancel():
        if cancel is not None and cancel():
            raise Cancelled("deblurring cancelled")

    def predict(x):
        check_cancel()  # also between the 8 passes of a self-ensemble: Cancel stays prompt
        return net(x, **job.kwargs)

    def run_plane(idx, tiles, norm) -> None:
        nonlocal done
        reader, blender = RowReader(arr, idx, job.lazy), BandBlender(width)
        rows = tile_rows(tiles)
        for r, row in enumerate(rows):
            band = norm.apply(reader.read(row[0].y0, row[0].y1))
            np.clip(band, -MAX_NORMALISED, MAX_NORMALISED, out=band)
            for t in row:
                check_cancel()
                x = torch.from_numpy(np.ascontiguousarray(band[:, t.x0 : t.x1]))[None, None].to(dev)
                with autocast_context(dev, job.options.mixed_precision):
                    y = dihedral_average(predict, x) if job.options.self_ensemble else net(x, **job.kwargs)
                blender.add(t, y.float()[0, 0].cpu().numpy())
                done += 1
                if progress is not None:
                    progress(done, total)
            top, restored = blender.release(rows[r + 1][0].y0 if r + 1 < len(rows) else height)
            emit(idx, top, norm.invert(restored))
        job.stats["rows_read"] = max(job.stats["rows_read"], reader.max_rows)
        job.stats["rows_blended"] = max(job.stats["rows_blended"], blender.max_rows)

    def constant_plane(idx, value) -> None:
        nonlocal done
        check_cancel()
        step = max(1, (1 << 22) // width)  # ~16 MB of float32 at a time
        for y0 in range(0, height, step):
            emit(idx, y0, np.full((min(step, height - y0), width), value, dtype=np.float32))
        done += len(tiles)
        if progress is not None:
            progress(done, total)

    was_training = net.training
    threads_ctx = cpu_threads(job.options.threads) if dev.type == "cpu" else contextlib.nullcontext()
    try:
        net.eval()
        with threads_ctx, torch.inference_mode():
            for p, idx in enumerate(planes):
                check_cancel()
                norm, constant = job.plane_norm(idx)
                if constant is not None:
                    constant_plane(idx, constant)
                    continue
                done_before = done
                while True:
                    oom = False
                    try:
                        run_plane(idx, tiles, norm)
                    except torch.OutOfMemoryError:
                        oom = True  # handled outside the except block so the failed tensors are freed
                    if not oom:
                        break
                    smaller = halve_tile(job.tile, job.multiple)
                    if smaller is None:
                        raise DGNOError(
                            f"out of memory on {dev} even with {job.tile} px tiles; try device='cpu'"
                        ) from None
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    job.tile = smaller
                    job.overlap = min(job.overlap, max(0, job.tile // 4 // job.multiple * job.multiple))
                    tiles = plan_tiles((height, width), job.tile, job.overlap, job.multiple)
                    done = done_before
                    total = done + len(tiles) * (len(planes) - p)
    finally:
        net.train(was_training)
    job.stats["tiles_per_plane"] = len(tiles)
    job.stats["planes"] = len(planes)


def _normalization_record(job: _Job) -> dict:
    """One fit: its map; one per plane: the percentiles and each plane's ``[lo, hi]`` in order."""
    mode = "stack" if job.options.normalize == "stack" else "plane"
    if len(job.norms) == 1:
        norm, _ = next(iter(job.norms.values()))
        return {**norm.to_dict(), "mode": mode}
    first, _ = next(iter(job.norms.values()), (Normalization(0.0, 1.0), None))
    return {
        "mode": mode,
        "low_percentile": first.low_percentile,
        "high_percentile": first.high_percentile,
        "planes": [[n.lo, n.hi] for n, _ in job.norms.values()],
    }


def _report(job: _Job, started: float, streamed: bool, output=None) -> DeblurReport:
    dm = job.dm
    return DeblurReport(
        model=dm.name,
        model_path=str(dm.path) if dm.path else None,
        element_size=job.element_size,
        flux=job.flux,
        device=str(dm.device),
        tile=job.tile,
        overlap=job.overlap,
        self_ensemble=job.options.self_ensemble,
        tiles_per_plane=job.stats["tiles_per_plane"],
        planes=job.stats["planes"],
        normalization=_normalization_record(job),
        constant=all(constant is not None for _, constant in job.norms.values()),
        rows_read=job.stats["rows_read"],
        rows_blended=job.stats["rows_blended"],
        seconds=time.perf_counter() - started,
        streamed=streamed,
        output=None if output is None else str(output),
    )


def restore(image, model, options: DeblurOptions, *, progress=None, cancel=None, channel_axis=None):
    """:func:`deblur` for callers that hold a :class:`DeblurOptions`: ``(restored, DeblurReport)``."""
    started = time.perf_counter()
    job = _prepare(image, model, options, channel_axis)
    out = np.empty(job.arr.shape, dtype=np.float32)

    def emit(idx, y0, rows):
        out[idx][y0 : y0 + len(rows)] = rows

    _execute(job, emit, progress, cancel)
    if channel_axis is not None:
        out = np.moveaxis(out, 0, channel_axis)
    return out, _report(job, started, streamed=False)


def restore_to(image, out, model, options: DeblurOptions, *, progress=None, cancel=None, metadata=None):
    """:func:`deblur_to` for callers that hold a :class:`DeblurOptions`: ``(out, DeblurReport)``."""
    started = time.perf_counter()
    job = _prepare(image, model, options)
    shape = tuple(int(s) for s in job.arr.shape)
    if isinstance(out, (str, os.PathLike)):
        with open_image_writer(out, shape, metadata=metadata) as writer:
            _execute(job, writer.write_rows, progress, cancel)
        return Path(out), _report(job, started, streamed=True, output=out)
    if tuple(getattr(out, "shape", ())) != shape or not hasattr(out, "__setitem__"):
        raise InputError(
            f"out must be a .tif/.zarr path or a writable array of shape {shape}, "
            f"got {type(out).__name__} of shape {getattr(out, 'shape', None)}"
        )

    def emit(idx, y0, rows):
        out[(*idx, slice(y0, y0 + len(rows)), slice(None))] = rows

    _execute(job, emit, progress, cancel)
    return out, _report(job, started, streamed=True)


def deblur(
    image,
    model=None,
    *,
    element_size: int | None = None,
    flux: str | None = None,
    device="auto",
    tile="auto",
    overlap="auto",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    channel_axis: int | None = None,
    threads: int | None = None,
    mixed_precision: bool = True,
    self_ensemble: bool = False,
    normalize: str = "plane",
    info: dict | None = None,
    options: DeblurOptions | None = None,
) -> np.ndarray:
    """Restore a defocused image; float32 of the same shape, in the input's intensity units.

    image: numpy (any integer or float dtype), dask or another lazy array (zarr ...), any number of
        dimensions with Y, X last; each 2-D plane is restored in turn, in row bands of tiles (lazy
        inputs are read one band at a time, never whole; the result is a numpy array; for results
        that do not fit in memory use :func:`deblur_to`).
    model: a :class:`DeblurModel`, a model name, a checkpoint path, a network from ``build_model``
        (or any module with ``pad_multiple``), or None for the shipped default.
    element_size, flux: run-time options of DGNO (default: the checkpoint's); ignored by networks
        without elements. ``element_size`` is 0 (one element) to 512 px and not larger than the
        image. With ``model=None`` a ``flux`` the default model was not trained with is refused
        (the error lists the models trained with it): name the model to run that combination.
    device: "auto", "cpu", "cuda", "cuda:N". With "auto", an already loaded model stays where it is;
        an explicit device moves it there (in place).
    tile, overlap: pixels (tile 16-8192, overlap smaller than the tile) or "auto" (whole plane up
        to 768² on CPU / 2048² on GPU, else 640-768 px tiles, whichever computes the least area,
        with ~1/8 overlap, at least 128 px; 640 px for planes over 4096² and on GPU). Both
        are rounded up to the network's grid. On GPU out-of-memory the tile is halved (down to 64
        px) and the plane retried.
    progress: ``progress(done, total)`` after each tile; total = tiles per plane × planes (it grows
        if an out-of-memory retry makes the tiles smaller).
    cancel: checked before each tile; a truthy return raises :class:`Cancelled`.
    channel_axis: the axis holding colour channels, if any (``-1`` for an (Y, X, 3) RGB array).
        Without it, a last axis of length 3 or 4 is refused as RGB(A) (it cannot be X: images
        need Y, X >= 8 px). With it, Y, X are the last two of the *other* axes and every channel
        is restored as a separate plane (normalised on its own unless ``normalize="stack"``); the
        output keeps the input's shape and axis order.
    threads: CPU threads for this call, 1 to the machine's cores (default ``$NAPARI_DGNO_THREADS``
        or torch's setting).
    mixed_precision: bf16/fp16 autocast on GPU (never on CPU).
    self_ensemble: x8 geometric self-ensemble: every tile is restored in its 8 rotations / mirror
        images and the results, mapped back, are averaged (see :mod:`napari_dgno.inference.ensemble`).
        About 8x the time (memory as for one pass) for typically about +0.1 dB PSNR on our bench.
    normalize: ``"plane"`` (default): each 2-D plane's 1st / 99.8th percentiles map to 0 / 1, so a
        plane gets the result it gets alone, whatever the rest of the stack holds; ``"stack"``: one
        fit over the whole input (every plane sampled), for stacks whose planes must keep their
        relative brightness through the network.
    info: if a dict is given it is filled with what was done (model, normalisation, tiles,
        ``self_ensemble``, time, and ``rows_read`` / ``rows_blended``: the most rows of one plane
        held at once): :meth:`DeblurReport.to_dict`.
    options: a :class:`DeblurOptions` holding the run options above; keyword arguments that differ
        from their defaults are applied on top of it.

    Rules on input: NaN/inf, empty arrays, fewer than 2 dimensions, Y or X under 8 px, and
    bool/complex/object dtypes are refused with an :class:`InputError`, as are options out of their
    bounds, before any work. Planes smaller than the model's own element (but >= 8 px) are
    reflect-padded by the network and cropped back. The normalisation is inverted at the end; a
    constant plane comes back unchanged.
    """
    keywords = dict(element_size=element_size, flux=flux, device=device, tile=tile, overlap=overlap)
    keywords.update(threads=threads, mixed_precision=mixed_precision, self_ensemble=self_ensemble)
    keywords.update(normalize=normalize)
    options = (options or DeblurOptions()).overridden(**keywords)
    out, report = restore(image, model, options, progress=progress, cancel=cancel, channel_axis=channel_axis)
    if info is not None:
        info.update(report.to_dict())
    return out


def deblur_to(
    image,
    out,
    model=None,
    *,
    element_size: int | None = None,
    flux: str | None = None,
    device="auto",
    tile="auto",
    overlap="auto",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    threads: int | None = None,
    mixed_precision: bool = True,
    self_ensemble: bool = False,
    normalize: str = "plane",
    metadata: dict | None = None,
    info: dict | None = None,
    options: DeblurOptions | None = None,
):
    """Like :func:`deblur`, but rows are written to ``out`` as soon as they are final.

    Why: memory then stays about one row band of tiles (plus the source's chunk rows), whatever
    the image size, so slides and plates larger than RAM can be restored.

    out: a path ending in ``.tif`` / ``.tiff`` / ``.ome.tif`` (a float32 TIFF written in place
        through a temporary file, renamed at the end) or ``.zarr`` / ``.ome.zarr`` (an OME-Zarr
        written into a temporary folder, renamed at the end): nothing is left at the destination
        if the run fails or is interrupted; returns the path. Or an array of the input's shape
        that supports slice assignment (numpy, ``np.memmap``, ``zarr.Array``): filled and returned.
    metadata: for file outputs, an ``info`` dict from :func:`napari_dgno.io.read_image` (axes,
        pixel sizes) to carry over.
    self_ensemble: average the 8 rotations / mirror images of every tile (about 8x the time,
        typically about +0.1 dB PSNR), as in :func:`deblur`.
    Everything else as in :func:`deblur` (colour images: use :func:`deblur`). The values are
    identical to :func:`deblur`'s.
    """
    keywords = dict(element_size=element_size, flux=flux, device=device, tile=tile, overlap=overlap)
    keywords.update(threads=threads, mixed_precision=mixed_precision, self_ensemble=self_ensemble)
    keywords.update(normalize=normalize)
    options = (options or DeblurOptions()).overridden(**keywords)
    out, report = restore_to(image, out, model, options, progress=progress, cancel=cancel, metadata=metadata)
    if info is not None:
        info.update(report.to_dict())
    return out
