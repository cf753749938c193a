"""Which models ``dgno bench`` runs, what each row is called, and where the baselines are.

The shipped DGNO variants load by name; the equal-step baselines are checkpoints in a folder
(``--baseline-dir``), trained by their ``configs/equal-steps/*.yaml`` recipes when missing
(``--train-baselines``); anything else comes in as ``--models NAME=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari_dgno.errors import DGNOError
from napari_dgno.io.catalog import training_summary
from napari_dgno.registry import DeblurModel, load_model
from napari_dgno.train import engine as train_engine
from napari_dgno.train.config import TrainConfig

Log = Callable[[str], None]

SHIPPED = {
    "dgno-small-face": "DGNO-small, face flux",
    "dgno-small-p0dg": "DGNO-small, P0DG flux",
    "dgno-small-none": "DGNO-small, no flux",
}
# The equal-step comparison's runs (configs/equal-steps/NAME.yaml without "equal-"): 4,000 steps each
# from scratch on the same data, schedule and seed, so their rows compare architectures; the default
# has had more training. (The P0DG and no-flux runs ship as dgno-small-p0dg / -none, rows above.)
BASELINES = {
    "equal-dgno-face": "DGNO-small, face flux (equal steps)",
    "equal-dgno-face-nogate": "DGNO-small, face flux, no score gate (equal steps)",
    "equal-dgno-face-w12": "DGNO-small at width 12, face flux (equal steps)",
    "equal-dgno-face-w24": "DGNO-small at width 24, face flux (equal steps)",
    "equal-nafnet": "NAFNet-style CNN (equal steps)",
    "equal-global-no": "Global NO (one element, no flux; equal steps)",
}
# Runs outside the equal-step set that the README's bench adds with ``--models NAME=PATH``: the CNN
# continued to the default's 20,000 steps (configs/nafnet-20k.yaml), so the default meets a CNN of
# its own budget.
EXTRA_LABELS = {"nafnet-20k": "NAFNet-style CNN (20,000 steps, the default's budget)"}


def default_baseline_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-dgno")) / "bench"


def find_baseline(name: str, directory: Path) -> Path | None:
    """``DIR/NAME.json`` or what ``--train-baselines`` writes, ``DIR/NAME/NAME.json``."""
    for stem in (Path(directory) / name, Path(directory) / name / name):
        if (
            stem.with_name(stem.name + ".json").is_file()
            and stem.with_name(stem.name + ".safetensors").is_file()
        ):
            return stem.with_name(stem.name + ".json")
    return None


def default_models(baseline_dir: str | Path | None = None) -> dict:
    """Shipped DGNO variants by name, baselines by path (None when not trained yet)."""
    directory = Path(baseline_dir) if baseline_dir else default_baseline_dir()
    models: dict = {name: find_baseline(name, directory) for name in BASELINES}
    models.update({name: name for name in SHIPPED})
    return models


def train_baselines(
    baseline_dir: str | Path | None = None, configs_dir: str | Path | None = None, log: Log | None = None
) -> dict[str, Path]:
    """Train the missing baselines with their ``configs/equal-steps/*.yaml`` into ``baseline_dir``."""

    log = log or (lambda _msg: None)
    directory = Path(baseline_dir) if baseline_dir else default_baseline_dir()
    directory.mkdir(parents=True, exist_ok=True)
    configs = Path(configs_dir) if configs_dir else _configs_dir()
    out = {}
    for name in BASELINES:
        found = find_baseline(name, directory)
        if found is not None:
            log(f"{name}: already trained ({found})")
            out[name] = found
            continue
        config_path = equal_step_recipe(name, configs)
        if not config_path.is_file():
            raise FileNotFoundError(f"no training config {config_path} (run from the repository)")
        log(f"{name}: training with {config_path} into {directory}")
        stem = train_engine.Trainer(TrainConfig.from_yaml(config_path, output_dir=str(directory))).run()
        out[name] = Path(stem).with_name(Path(stem).name + ".json")
    return out


def equal_step_recipe(run_name: str, configs_dir: str | Path | None = None) -> Path:
    """The recipe of equal-step run ``equal-X``: ``configs/equal-steps/X.yaml``."""
    configs = Path(configs_dir) if configs_dir else _configs_dir()
    return configs / "equal-steps" / f"{run_name.removeprefix('equal-')}.yaml"


def _configs_dir() -> Path:
    here = Path(__file__).resolve().parents[3] / "configs"  # src/napari_dgno/bench/models.py -> repo
    return here if here.is_dir() else Path.cwd() / "configs"


def load_for_bench(name: str, spec, baseline_dir) -> tuple[object | None, str]:
    """``(DeblurModel, "")`` or ``(None, why not)``: a model that cannot load is a row with a note."""
    import torch

    if isinstance(spec, DeblurModel):
        return spec, ""
    if isinstance(spec, torch.nn.Module):
        return DeblurModel(net=spec.eval(), meta={}, name=name), ""
    if spec is None:
        where = Path(baseline_dir) if baseline_dir else default_baseline_dir()
        return None, f"not found in {where}; train it with `dgno bench --train-baselines`"
    try:
        return load_model(spec, device="cpu"), ""
    except (DGNOError, OSError, ValueError) as err:
        return None, f"not loaded: {' '.join(str(err).split())}"


def training_steps(meta: dict) -> int | None:
    """Optimizer steps behind a checkpoint, over every stage it was fine-tuned through (None: unknown).

    Why: rows compare models trained for different budgets; the table should say so.
    """
    return training_summary(meta or {}).get("steps") or None
