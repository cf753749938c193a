"""``dgno bench``: every method on the same frozen test set, scored the same way.

Rows: the blurred input; Wiener, Richardson–Lucy and RL with total variation, each given the
image's true optics and one blur level tuned on the validation set; patch-wise and spatially
variant RL handed the true depth map (oracles, not bounds); the NAFNet-style CNN and the global
neural operator baselines; DGNO-small with each flux; the default model with the x8 geometric
self-ensemble; and an element-size sweep of the default model at inference only. A model that
cannot be found is a row with a note, never a crash.

Every row carries per-image values (so other scripts can recompute), mean ± standard error over
images, overall and per source, the paired per-image difference from the reference (default) model,
and the grid ratio of its outputs. Every row's PSNR / SSIM comes from
:func:`napari_dgno.metrics.psnr_ssim` (the classical tuning scores the same way, which a test pins;
the per-distance gains use :func:`napari_dgno.bench.jumps.binned_psnr`). With ``real_dir`` the
reference model also deblurs a folder of real images, measured without ground truth
(:mod:`napari_dgno.bench.real`). Which models run and where the baselines are:
:mod:`napari_dgno.bench.models`; a row and its statistics: :mod:`napari_dgno.bench.rows`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from pathlib import Path

import numpy as np

from napari_dgno.bench import jumps, real
from napari_dgno.bench.classical import (
    QUICK_MAX_ITERATIONS,
    RADIUS_GRID_QUICK_PX,
    TV_WEIGHTS_QUICK,
    ClassicalSettings,
    classical_methods,
    optics_of,
    tune_classical,
)
from napari_dgno.bench.models import (
    BASELINES,
    EXTRA_LABELS,
    SHIPPED,
    Log,
    default_models,
    load_for_bench,
    training_steps,
)
from napari_dgno.bench.report import write_report
from napari_dgno.bench.rows import BenchReport, BenchRow, add_leads, max_median, summarise
from napari_dgno.bench.testset import BenchItem, benchmark_set, tuning_set
from napari_dgno.devices import cpu_threads
from napari_dgno.errors import DGNOError
from napari_dgno.inference import engine
from napari_dgno.metrics import grid_ratio, psnr_ssim
from napari_dgno.model import count_parameters
from napari_dgno.model.complexity import count_gmacs
from napari_dgno.model.config import check_element_size

DEFAULT_SWEEP_MODEL = "dgno-small-face"
ELEMENT_SWEEP = (8, 16, 32, 64, 0)
ENSEMBLE_LABEL = "×8 self-ensemble"


# -- the run ---------------------------------------------------------------------------------------


def run_bench(
    models: dict | None = None,
    quick: bool = False,
    element_sweep=ELEMENT_SWEEP,
    out: str | Path | None = None,
    *,
    baseline_dir: str | Path | None = None,
    sweep_model: str | None = None,
    self_ensemble: bool = True,
    classical_settings: ClassicalSettings | None = None,
    threads: int | None = None,
    real_dir: str | Path | None = None,
    log: Log | None = None,
) -> BenchReport:
    """Benchmark everything on the frozen test set; write ``bench.md`` + ``bench.json`` to ``out``.

    models: ``{name: checkpoint path | model name | DeblurModel | network}``; a None entry or one
        that does not load is a skipped row with the reason.
        Default: the shipped DGNO variants and the baselines in ``baseline_dir``.
    quick: 2 test images, 2 tuning images, a coarse tuning grid and at most 15 RL iterations.
    element_sweep: element sizes (px, 0 = one element) run at inference only on ``sweep_model``
        (default ``dgno-small-face``, else the first DGNO model that loads). ``sweep_model`` (or
        ``dgno-small-face``) is also the reference of the paired differences.
    self_ensemble: add a row for ``sweep_model`` (default ``dgno-small-face``), when it loaded, run
        with the x8 self-ensemble (8 passes per image: ~8x its own row's time, also in quick mode);
        False leaves the row out.
    classical_settings: skip tuning and use these.
    threads: CPU threads for the whole run (default: ``$NAPARI_DGNO_THREADS``, else torch's
        setting); recorded in the report.
    real_dir: a folder of real TIFFs (no ground truth) the reference model deblurs; grid ratio,
        sharpness and background noise of input and output go into the report. Never select on it.
    """

    log = log or (lambda _msg: None)
    started = time.perf_counter()
    with cpu_threads(threads) as n_threads:
        test = benchmark_set(quick)
        log(f"test set: {len(test.items)} images, fingerprint {test.fingerprint}")
        blur_maps = [jumps.blur_radius_map(i.depth, optics_of(i)) for i in test.items]
        jump_bins = [jumps.bin_index(jumps.jump_distance(b)) for b in blur_maps]
        n_bins = len(jumps.DISTANCE_BINS) - 1
        blurred_local = [
            jumps.binned_psnr(i.blurred, i.sharp, b, n_bins)
            for i, b in zip(test.items, jump_bins, strict=True)
        ]
        evaluate = _Evaluator(test.items, jump_bins, blurred_local, n_bins, n_threads, log)

        rows = [evaluate("Blurred input", "input", lambda item: item.blurred, timed=False, key="input")]
        tune = None
        if classical_settings is None:
            tune = tuning_set(quick)
            log(f"tuning the classical methods on {len(tune.items)} validation images ({tune.fingerprint})")
            grids = {}
            if quick:
                grids = dict(
                    radius_grid=RADIUS_GRID_QUICK_PX,
                    max_iterations=QUICK_MAX_ITERATIONS,
                    tv_weights=TV_WEIGHTS_QUICK,
                    tv_max_iterations=QUICK_MAX_ITERATIONS,
                )
            classical_settings = tune_classical(tune.items, log=log, fingerprint=tune.fingerprint, **grids)
        for m in classical_methods(classical_settings):
            rows.append(evaluate(m.label, m.kind, m.restore, settings=m.settings, key=m.key))

        models = default_models(baseline_dir) if models is None else dict(models)
        loaded = {}
        for name, spec in models.items():
            label = SHIPPED.get(name) or BASELINES.get(name) or EXTRA_LABELS.get(name) or name
            model, note = load_for_bench(name, spec, baseline_dir)
            if model is None:
                rows.append(BenchRow(label, "network", key=name, note=note))
                continue
            loaded[name] = model
            rows.append(_network_row(evaluate, label, model, None, key=name))
        reference = sweep_model or DEFAULT_SWEEP_MODEL
        if self_ensemble and reference in loaded:
            label = f"{SHIPPED.get(reference, reference)}, {ENSEMBLE_LABEL}"
            rows.append(
                _network_row(
                    evaluate, label, loaded[reference], None, self_ensemble=True, key=f"{reference}, x8"
                )
            )
        sweep_rows, sweep_note = _sweep_rows(evaluate, loaded, element_sweep, sweep_model)
        rows += sweep_rows
        add_leads(rows, reference)

        real_images = None
        if real_dir is not None:
            real_images = _real_section(loaded.get(reference), reference, real_dir, n_threads, log)

        seconds = time.perf_counter() - started
        truth_grid = [g for g in (_grid(i.sharp) for i in test.items) if g is not None]
        meta = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "quick": quick,
            "test_set": {
                "fingerprint": test.fingerprint,
                "images": [i.name for i in test.items],
                "sources": {k: len(v) for k, v in test.by_source().items()},
                "shapes": [[int(s) for s in i.sharp.shape] for i in test.items],
                "max_blur_radius_px": [float(b.max()) for b in blur_maps],
                "optics": [repr(optics_of(i)) for i in test.items],
                "truth_grid_ratio": max_median(truth_grid),
                "notes": test.notes,
            },
            "validation_set": (
                {"fingerprint": tune.fingerprint, "images": [i.name for i in tune.items]}
                if tune is not None
                else None
            ),
            "classical_settings": classical_settings.to_dict(),
            "reference_model": reference if any(r.key == reference and not r.skipped for r in rows) else None,
            "element_sweep_note": sweep_note,
            "real_images": real_images,
            "threads": n_threads,
            "cpu": _cpu_name(),
            "torch": _torch_version(),
            "jump_threshold_px": jumps.JUMP_THRESHOLD_PX,
            "jump_pixel_fraction": _bin_fractions(jump_bins, n_bins),
            "seconds": round(seconds, 1),
        }
    report = BenchReport(rows, jumps.bin_labels(), meta)
    if out is not None:
        write_report(report, out)
    return report


class _Evaluator:
    """Runs one method over the test set: per-image metrics in both conventions, grid ratio, time,
    jump-distance gains; the row gets means ± s.e. overall and per source."""

    def __init__(self, items: list[BenchItem], bins, blurred_local, n_bins: int, threads: int, log: Log):
        self.items, self.bins, self.blurred_local, self.n_bins = items, bins, blurred_local, n_bins
        self.threads, self.log = threads, log

    def __call__(
        self, label: str, kind: str, restore, settings: str = "", timed: bool = True, **extra
    ) -> BenchRow:
        images, gains, seconds = [], [[] for _ in range(self.n_bins)], 0.0
        for item, bins, base in zip(self.items, self.bins, self.blurred_local, strict=True):
            t0 = time.perf_counter()
            restored = np.asarray(restore(item), dtype=np.float32)
            seconds += time.perf_counter() - t0
            psnr, ssim = psnr_ssim(restored, item.sharp, "gt")
            psnr_mm, ssim_mm = psnr_ssim(restored, item.sharp, "minmax")
            images.append(
                {
                    "name": item.name,
                    "source": item.source,
                    "psnr": psnr,
                    "ssim": ssim,
                    "psnr_minmax": psnr_mm,
                    "ssim_minmax": ssim_mm,
                    "grid_ratio": _grid(restored),
                }
            )
            local = jumps.binned_psnr(restored, item.sharp, bins, self.n_bins)
            for b, (v, v0) in enumerate(zip(local, base, strict=True)):
                if v is not None and v0 is not None and np.isfinite(v) and np.isfinite(v0):
                    gains[b].append(v - v0)
        megapixels = sum(i.sharp.size for i in self.items) / 1e6
        row = BenchRow(
            method=label,
            kind=kind,
            ms_per_mpx=1000 * seconds / megapixels if timed else None,
            settings=settings,
            jump_gain_db=[float(np.mean(g)) if g else None for g in gains],
            images=images,
            **extra,
        )
        summarise(row)
        self.log(f"{label}: PSNR {row.psnr:.2f} dB, SSIM {row.ssim:.3f}")
        return row


def _grid(image) -> float | None:
    """Grid ratio, or None for an image smaller than :func:`grid_ratio` accepts."""
    try:
        return grid_ratio(image)
    except ValueError:
        return None


def _real_section(model, name: str, folder, threads: int, log: Log) -> dict:
    """The reference model on a folder of real images (no ground truth), for the report."""
    section = {"folder": str(folder), "model": name, "images": [], "note": ""}
    if model is None:
        section["note"] = f"{name} not loaded"
        return section
    try:
        results = real.check_real_images(model, folder, threads=threads, log=log)
    except (OSError, DGNOError) as err:
        section["note"] = f"not run: {' '.join(str(err).split())}"
        return section
    section["images"] = [r.to_dict() for r in results]
    if not results:
        section["note"] = "no TIFFs in the folder"
    return section


def _network_row(
    evaluate: _Evaluator,
    label: str,
    model,
    element_size: int | None,
    kind="network",
    self_ensemble: bool = False,
    key: str = "",
    settings_suffix: str = "",
) -> BenchRow:

    def restore(item: BenchItem) -> np.ndarray:
        return engine.deblur(
            item.blurred,
            model,
            element_size=element_size,
            device="cpu",
            threads=evaluate.threads,
            self_ensemble=self_ensemble,
        )

    if evaluate.items:  # warm-up: the first call pays for allocations and kernel selection
        restore(evaluate.items[0])
    e = model.element_size if element_size is None else element_size
    steps = training_steps(model.meta)
    settings = f"{model.name}" + (f" ({steps} steps)" if steps else "")
    settings += f", E = {e} px, flux {model.flux}" if e is not None else ""
    if self_ensemble:
        settings += ", self-ensemble (8 rotations / mirror images averaged)"
    settings += settings_suffix
    gmacs = _gmacs(model.net, element_size)
    return evaluate(
        label,
        kind,
        restore,
        settings=settings,
        key=key or model.name,
        params_m=count_parameters(model.net) / 1e6,
        gmacs=gmacs * 8 if gmacs is not None and self_ensemble else gmacs,  # 8 passes per image
    )


def _sweep_rows(
    evaluate: _Evaluator, loaded: dict, sweep, sweep_model: str | None
) -> tuple[list[BenchRow], str]:
    """Rows of the element-size sweep and the note that says what they measure."""
    if not sweep:
        return [], ""
    name = sweep_model or DEFAULT_SWEEP_MODEL
    if name not in loaded:
        dgno = [n for n, m in loaded.items() if hasattr(getattr(m.net, "config", None), "element_size")]
        if sweep_model is not None or not dgno:
            return [BenchRow("Element-size sweep", "element sweep", note=f"{name} not loaded")], ""
        name = dgno[0]
    model = loaded[name]
    # Why: one model run at other element sizes measures a train/test mismatch, not what elements
    # of that size are worth; the rows must say so.
    note = f"trained at E = {model.element_size} px; other sizes at inference only"

    rows = []
    for e in sweep:
        tag = "trained" if e == model.element_size else "inference only"
        label = f"{name}, E = {e} px ({tag})" if e else f"{name}, one element (E = 0, {tag})"
        try:
            check_element_size(int(e), model.net.config.levels - 1)
        except ValueError as err:
            rows.append(BenchRow(label, "element sweep", note=str(err)))
            continue
        rows.append(
            _network_row(
                evaluate,
                label,
                model,
                int(e),
                kind="element sweep",
                key=f"{name}, E = {e}",
                settings_suffix=f"; {note}",
            )
        )
    return rows, note


def _gmacs(net, element_size: int | None) -> float | None:
    """GMACs per 256² image at this element size (None if the counter cannot run the network)."""
    import torch

    class _AtElementSize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.config = net, getattr(net, "config", None)

        def forward(self, x):
            return self.net(x) if element_size is None else self.net(x, element_size=element_size)

    was_training = net.training
    try:
        return float(count_gmacs(_AtElementSize().eval(), size=256))
    except Exception:  # a counting failure must not cost the row
        return None
    finally:
        net.train(was_training)


def _bin_fractions(bins_per_item, n_bins: int) -> list[float]:
    counts = np.zeros(n_bins)
    for b in bins_per_item:
        counts += np.bincount(b.ravel(), minlength=n_bins)[:n_bins]
    return [float(c) for c in counts / max(counts.sum(), 1)]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    import torch

    return torch.__version__
