"""``dgno deblur``: one file, or a batch (folder, glob, several files) on a local or remote dask cluster."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from ..errors import InputError, one_line
from ..options import DeblurOptions
from ._args import FLUX_CHOICES, pixels_or_auto

MAX_WORKERS = 256


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "deblur",
        help="restore defocused images (one file, or a plate on a dask cluster)",
        description=(
            "Remove spatially varying defocus blur from a TIFF / OME-TIFF / OME-Zarr / PNG / JPEG / "
            "BMP (8 or 16 bit, or float; any compression; nD with Y, X last), or a CZI / ND2 / LIF / "
            "DV with `pip install 'napari-dgno[formats]'`. Writes a float32 TIFF (or OME-Zarr for a "
            ".zarr output) of the same shape in the input's intensity units, by default "
            "INPUT-deblurred.tif beside the input (never replacing a file there unless --force). "
            "Large inputs are read and written row band by row band, so memory stays bounded. "
            'Several inputs, a folder or a quoted glob ("plate/*.tif") run as a batch on a dask '
            "cluster: -o is then a folder, finished outputs are skipped on a re-run, and failed "
            "files are listed at the end."
        ),
    )
    p.add_argument("input", nargs="+", help="input image; or files, a folder, a glob")
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="output .tif / .ome.tif / .zarr, or a folder (default: INPUT-deblurred.tif beside the input)",
    )
    p.add_argument("--model", help="model name (see `dgno models`) or checkpoint path")
    p.add_argument(
        "--element-size",
        type=int,
        metavar="PX",
        help="element side, 0-512 px and at most the image side (0 = one)",
    )
    p.add_argument(
        "--flux", choices=FLUX_CHOICES, help="interface flux between elements (default: the model's)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tile", type=pixels_or_auto, default="auto", metavar="PX|auto", help="16-8192 px")
    p.add_argument(
        "--overlap", type=pixels_or_auto, default="auto", metavar="PX|auto", help="0 px to under the tile"
    )
    p.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads, 1 to the cores (per worker in a batch)"
    )
    p.add_argument(
        "--normalize",
        choices=("plane", "stack"),
        default="plane",
        help="percentiles per 2-D plane (default) or one fit over the whole stack",
    )
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the 8 rotations / mirror images of each tile (~8x slower, slightly better)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="always write row band by row band (automatic above 128 MiB of output and for .zarr)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    batch = p.add_argument_group("batch (several inputs)")
    batch.add_argument("--scheduler", metavar="ADDRESS", help="a running dask.distributed scheduler")
    batch.add_argument(
        "--workers", type=int, metavar="N", help="local cluster worker processes (default: half the cores)"
    )
    batch.add_argument(
        "--force", action="store_true", help="redo complete outputs; replace an existing default output"
    )
    p.set_defaults(func=run_deblur)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): not the same
        return False


def _is_folder(output: Path, text: str) -> bool:
    from ..io import is_zarr_path

    if is_zarr_path(output):
        return False
    return output.is_dir() or text.endswith(("/", os.sep))


def resolve_output(source: Path, output: Path | None, text: str, force: bool) -> Path:
    """Where one input's result goes: ``-o`` as given, ``FOLDER/NAME.tif`` for a folder, else
    ``INPUT-deblurred.tif`` beside the input. A path we chose is never replaced without --force:
    re-running a command must not silently overwrite an earlier result."""
    from ..batch import default_output, output_name

    if output is not None and not _is_folder(output, text):
        return output
    if output is None:
        target = default_output(source)
    else:
        if not output.parent.is_dir():
            raise InputError(f"output folder {output.parent} does not exist")
        output.mkdir(exist_ok=True)
        target = output / output_name(source)
    if target.exists() and not force:
        raise InputError(f"{target} already exists; pass --force to replace it, or -o to choose another path")
    return target


def _check_output(input_path: Path, output: Path) -> None:
    from ..io import output_format
    from ..io.ome_zarr import check_zarr_destination

    if _same_file(input_path, output):
        raise InputError(f"refusing to overwrite the input {input_path}; choose another -o path")
    if output_format(output) == "zarr":
        check_zarr_destination(output)
        return
    if output.is_dir():
        raise InputError(f"output {output} is a folder")
    if not output.parent.is_dir():
        raise InputError(f"output folder {output.parent} does not exist")


DELAY_S = 1.0  # no bar at all for work that ends sooner


class _Progress:
    """A tqdm bar on stderr with its total (tiles of all planes), naming the plane in a stack;
    created at the first tile (so early errors print nothing else), shown only after a second."""

    def __init__(self, enabled: bool, unit: str = "tile", desc: str = "deblur"):
        self.enabled, self.bar, self.unit, self.desc, self.planes = enabled, None, unit, desc, 1

    def on_open(self, info: dict) -> None:
        self.planes = max(1, math.prod(info.get("shape", (1, 1))[:-2]))

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit=self.unit, desc=self.desc, file=sys.stderr, leave=False, delay=DELAY_S
            )
        if self.bar.total != total:
            self.bar.total = total
        if self.planes > 1:
            per_plane = max(total // self.planes, 1)
            plane = min((max(done, 1) - 1) // per_plane + 1, self.planes)
            self.bar.set_description_str(f"{self.desc} plane {plane}/{self.planes}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def options_from(args) -> DeblurOptions:
    """The run options the flags ask for, built once and handed on whole."""
    return DeblurOptions(
        element_size=args.element_size,
        flux=args.flux,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        threads=args.threads,
        self_ensemble=args.self_ensemble,
        normalize=args.normalize,
    )


def run_deblur(args) -> int:
    from ..batch import is_batch

    options = options_from(args)  # every bound that needs no image, before anything else
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise InputError(
            f"--workers must be between 1 and {MAX_WORKERS}, got {args.workers}: each worker is a "
            "process holding its own model"
        )
    if is_batch(args.input):
        return run_batch(args, options)
    if args.scheduler or args.workers:
        raise InputError("--scheduler and --workers apply to several inputs (a folder or a glob)")
    from ..batch import EAGER_BYTES, deblur_file
    from ..io import open_image
    from ..registry import check_default_flux, load_model

    started = time.perf_counter()
    source = Path(args.input[0])
    given = None if args.output is None else Path(args.output)
    output = resolve_output(source, given, args.output or "", args.force)
    _check_output(source, output)
    with open_image(source, lazy=EAGER_BYTES) as (image, _):  # the header: bounds that need the image
        options.check_image(tuple(int(n) for n in image.shape[-2:]))
    if args.model is None:
        check_default_flux(args.flux)  # never swap the model behind the user's back
    model = load_model(args.model, device=args.device)
    progress = _Progress(enabled=not args.quiet)
    try:
        stream = True if args.stream else None
        options = options.replace(device="auto")  # the model is on its device already
        report = deblur_file(
            source, output, model, options, stream=stream, progress=progress, on_open=progress.on_open
        )
    finally:
        progress.close()
    if not args.quiet:
        shape = "x".join(str(s) for s in report.shape)
        options = f"E={report.element_size}, flux={report.flux}" if report.flux else ""
        streamed = ", streamed" if report.streamed else ""
        print(
            f"dgno: wrote {output} ({shape} float32{streamed}) with model {model.name}"
            f"{f' ({options})' if options else ''} on {report.device} "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


def run_batch(args, options: DeblurOptions) -> int:
    """Several files on a dask cluster: one line per failure, a summary, exit 1 if any failed."""
    from ..batch import deblur_files
    from ..registry import check_default_flux

    if args.output is None:
        raise InputError("with several inputs, name an output folder with -o FOLDER")
    started = time.perf_counter()
    if args.model is None:
        check_default_flux(args.flux)
    model_name = args.model
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = None

    def on_result(result: dict) -> None:
        nonlocal bar
        counts[result["status"]] += 1
        if result["status"] == "failed":
            line = f"dgno: failed: {result['input']}: {one_line(result.get('error', 'unknown error'))}"
            (bar.write if bar is not None else print)(line, file=sys.stderr)
        if bar is not None:
            bar.update(1)

    def on_total(total: int) -> None:
        nonlocal bar
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="file", desc="deblur", file=sys.stderr, leave=False, delay=DELAY_S)

    try:
        results = deblur_files(
            args.input,
            Path(args.output),
            model_name,
            scheduler=args.scheduler,
            workers=args.workers,
            options=options,
            stream=True if args.stream else None,
            force=args.force,
            on_result=on_result,
            on_total=on_total,
        )
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet or counts["failed"]:
        print(
            f"dgno: {counts['done']} written, {counts['skipped']} skipped (already complete), "
            f"{counts['failed']} failed of {len(results)} in {args.output} "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return 1 if counts["failed"] else 0
