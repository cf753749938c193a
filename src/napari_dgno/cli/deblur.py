"""``dgno deblur``: one file, or a batch (folder, glob, several files) on threads or a dask cluster."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import InputError, one_line
from ..options import DeblurOptions
from ._args import FLUX_CHOICES, pixels_or_auto


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "deblur",
        help="restore defocused images (one file, or a plate on a dask cluster)",
        description=(
            "Remove spatially varying defocus blur from a TIFF / OME-TIFF / OME-Zarr (uint8, uint16 "
            "or float; any compression; nD with Y, X last). Writes a float32 TIFF (or OME-Zarr for a "
            ".zarr output) of the same shape in the input's intensity units. Large inputs are read "
            "and written row band by row band, so memory stays bounded. Several inputs, a folder or "
            'a quoted glob ("plate/*.tif") run as a batch on a dask cluster: -o is then a folder, '
            "finished outputs are skipped on a re-run, and failed files are listed at the end."
        ),
    )
    p.add_argument("input", nargs="+", help="input TIFF / OME-TIFF / OME-Zarr; or files, a folder, a glob")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output .tif / .ome.tif / .zarr (a folder for a batch)",
    )
    p.add_argument("--model", help="model name (see `dgno models`) or checkpoint path")
    p.add_argument("--element-size", type=int, metavar="PX", help="element side in pixels (0 = one)")
    p.add_argument("--flux", choices=FLUX_CHOICES, help="interface flux between elements")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tile", type=pixels_or_auto, default="auto", metavar="PX|auto")
    p.add_argument("--overlap", type=pixels_or_auto, default="auto", metavar="PX|auto")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (per worker in a batch)")
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
    batch.add_argument("--force", action="store_true", help="redo files whose output is already complete")
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


class _Progress:
    """A tqdm bar on stderr, created at the first tile (so early errors print nothing else)."""

    def __init__(self, enabled: bool, unit: str = "tile", desc: str = "deblur"):
        self.enabled, self.bar, self.unit, self.desc = enabled, None, unit, desc

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, desc=self.desc, file=sys.stderr, leave=False)
        if self.bar.total != total:
            self.bar.total = total
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
    )


def run_deblur(args) -> int:
    from ..batch import is_batch

    if is_batch(args.input):
        return run_batch(args)
    if args.scheduler or args.workers:
        raise InputError("--scheduler and --workers apply to several inputs (a folder or a glob)")
    from ..batch import deblur_file
    from ..registry import default_model_name, load_model

    started = time.perf_counter()
    source = Path(args.input[0])
    _check_output(source, args.output)
    model_name = args.model
    if model_name is None and args.flux is not None:
        model_name = default_model_name(flux=args.flux)  # None -> the default, run with that flux
    model = load_model(model_name, device=args.device)
    progress = _Progress(enabled=not args.quiet)
    try:
        stream = True if args.stream else None
        options = options_from(args).replace(device="auto")  # the model is on its device already
        report = deblur_file(source, args.output, model, options, stream=stream, progress=progress)
    finally:
        progress.close()
    if not args.quiet:
        shape = "x".join(str(s) for s in report.shape)
        options = f"E={report.element_size}, flux={report.flux}" if report.flux else ""
        streamed = ", streamed" if report.streamed else ""
        print(
            f"dgno: wrote {args.output} ({shape} float32{streamed}) with model {model.name}"
            f"{f' ({options})' if options else ''} on {report.device} "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


def run_batch(args) -> int:
    """Several files on a dask cluster: one line per failure, a summary, exit 1 if any failed."""
    from ..batch import deblur_files
    from ..registry import default_model_name

    started = time.perf_counter()
    model_name = args.model
    if model_name is None and args.flux is not None:
        model_name = default_model_name(flux=args.flux)
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

    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(unit="file", desc="deblur", file=sys.stderr, leave=False)
    try:
        results = deblur_files(
            args.input,
            args.output,
            model_name,
            scheduler=args.scheduler,
            workers=args.workers,
            options=options_from(args),
            stream=True if args.stream else None,
            force=args.force,
            on_result=on_result,
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
