"""The ``dgno`` command: ``dgno deblur``, ``dgno models`` (and ``demo``, ``train``, ``bench`` as they land).

Every failure the user can fix is one line, ``dgno: error: <reason>``, and exit status 2; an
interrupted run exits 130; a batch (several inputs) in which some files failed lists them, one line
each, and exits 1. Output files are written atomically, so a failed or interrupted run never
leaves a partial file. Heavy imports (torch) happen inside the commands, so ``dgno --help`` is quick.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path

from .errors import DGNOError, InputError

# Subcommands: name -> "module:function". The function receives the subparsers object, adds its
# parser and sets ``func`` (``args -> int`` exit code) with ``set_defaults``. Add a line here for a new
# command (``"train": "napari_dgno.train.cli:add_parser"``); a module that does not exist (yet) is
# skipped, so the command simply does not appear.
SUBCOMMANDS: dict[str, str] = {
    "deblur": "napari_dgno.cli:add_deblur_parser",
    "models": "napari_dgno.cli:add_models_parser",
    "train": "napari_dgno.train.cli:add_parser",
    "demo": "napari_dgno.demo:add_parser",
    "bench": "napari_dgno.bench.cli:add_parser",
}

FLUX_CHOICES = ("face", "p0dg", "none")
PRESET_TABLE = ("paper", "small")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line through ``main`` instead of exiting."""

    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _pixels_or_auto(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more pixels, got {value}")
    return value


# ---------------------------------------------------------------------------------------------------
# dgno deblur


def add_deblur_parser(subparsers) -> None:
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
    p.add_argument("--tile", type=_pixels_or_auto, default="auto", metavar="PX|auto")
    p.add_argument("--overlap", type=_pixels_or_auto, default="auto", metavar="PX|auto")
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
    from .io import output_format
    from .io.ome_zarr import check_zarr_destination

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


def run_deblur(args) -> int:
    from .batch import is_batch

    if is_batch(args.input):
        return run_batch(args)
    if args.scheduler or args.workers:
        raise InputError("--scheduler and --workers apply to several inputs (a folder or a glob)")
    from .batch import deblur_file
    from .registry import default_model_name, load_model

    started = time.perf_counter()
    source = Path(args.input[0])
    _check_output(source, args.output)
    model_name = args.model
    if model_name is None and args.flux is not None:
        model_name = default_model_name(flux=args.flux)  # None -> the default, run with that flux
    model = load_model(model_name, device=args.device)
    progress = _Progress(enabled=not args.quiet)
    try:
        run_info = deblur_file(
            source,
            args.output,
            model,
            stream=True if args.stream else None,
            progress=progress,
            element_size=args.element_size,
            flux=args.flux,
            tile=args.tile,
            overlap=args.overlap,
            threads=args.threads,
            self_ensemble=args.self_ensemble,
        )
    finally:
        progress.close()
    if not args.quiet:
        shape = "x".join(str(s) for s in run_info["shape"])
        options = f"E={run_info['element_size']}, flux={run_info['flux']}" if run_info["flux"] else ""
        streamed = ", streamed" if run_info["streamed"] else ""
        print(
            f"dgno: wrote {args.output} ({shape} float32{streamed}) with model {model.name}"
            f"{f' ({options})' if options else ''} on {run_info['device']} "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


def run_batch(args) -> int:
    """Several files on a dask cluster: one line per failure, a summary, exit 1 if any failed."""
    from .batch import deblur_files
    from .registry import default_model_name

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
            line = f"dgno: failed: {result['input']}: {_one_line(result.get('error', 'unknown error'))}"
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
            threads=args.threads,
            device=args.device,
            element_size=args.element_size,
            flux=args.flux,
            tile=args.tile,
            overlap=args.overlap,
            self_ensemble=args.self_ensemble,
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


# ---------------------------------------------------------------------------------------------------
# dgno models


def add_models_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list installed models and the presets' size and cost",
        description="Shipped and user models, then parameters and GMACs of each preset and flux.",
    )
    p.add_argument("--size", type=int, default=256, help="image side for the GMAC count (default 256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_models)


def _format_metrics(metrics: dict) -> str:
    parts = []
    for key, value in (metrics or {}).items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key}={value}")
    return " ".join(parts) or "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def preset_costs(size: int = 256) -> list[dict]:
    """Parameters and GMACs of every (preset, flux) pair in the table, counted on the meta device."""
    from .model.complexity import preset_cost

    out = []
    for preset in PRESET_TABLE:
        for flux in FLUX_CHOICES:
            params, gmacs = preset_cost(preset, flux, size)
            out.append({"preset": preset, "flux": flux, "params": params, "gmacs": gmacs, "size": size})
    return out


def run_models(args) -> int:
    from .registry import list_models, shipped_model_dir, user_model_dir

    models = list_models()
    costs = preset_costs(args.size)
    if args.json:
        import json

        print(json.dumps({"models": models, "presets": costs}, indent=2, default=str))
        return 0
    print("Models")
    if models:
        rows = []
        for m in models:
            if "error" in m:
                rows.append([m["name"], m["source"], "-", "-", "-", "-", f"unreadable: {m['error']}"])
                continue
            name = m["name"] + (" (default)" if m.get("default") else "")
            params = f"{m['params'] / 1e6:.2f} M" if m.get("params") else "-"
            rows.append(
                [
                    name,
                    m["source"],
                    m.get("preset") or m.get("architecture", "-"),
                    m.get("flux") or "-",
                    str(m["element_size"]) if m.get("element_size") is not None else "-",
                    params,
                    _format_metrics(m.get("metrics")),
                ]
            )
        print(_table(rows, ["name", "source", "preset", "flux", "element px", "params", "metrics"]))
    else:
        print(f"  (none: nothing shipped in {shipped_model_dir()}, no user models in {user_model_dir()})")
    print()
    print(f"Presets: parameters and GMACs (as the paper counts GFLOPs) per {args.size}x{args.size} image")
    rows = [
        [c["preset"], c["flux"], f"{c['params']:,}", f"{c['params'] / 1e6:.2f} M", f"{c['gmacs']:.2f}"]
        for c in costs
    ]
    print(_table(rows, ["preset", "flux", "parameters", "params", "GMACs"]))
    return 0


# ---------------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="dgno",
        description="Remove spatially varying defocus blur from microscopy images with DGNO.",
    )
    parser.add_argument("--version", action="version", version=f"napari-dgno {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for target in SUBCOMMANDS.values():
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # that command's module has not landed yet
            raise
        getattr(module, attr)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dgno``; returns the exit status (0 ok, 2 bad input or usage, 130 interrupted).

    Ctrl-C at any point in here (while the commands' modules import, while the arguments are
    parsed, while a command runs) ends with one line, ``dgno: interrupted``, and status 130: never
    a traceback.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while we say so
            print("dgno: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(f"dgno: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except DGNOError as err:
        print(f"dgno: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("dgno: error: out of memory; try a smaller --tile or another --device", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m napari_dgno.cli
    sys.exit(main())
