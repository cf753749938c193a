"""The shipped models: listed, loadable, trained by our recipe, and they actually deblur the sample."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_dgno.bench.models import equal_step_recipe
from napari_dgno.inference import deblur, list_models, load_model
from napari_dgno.inference.engine import default_model_name, shipped_model_dir
from napari_dgno.metrics import psnr_ssim
from napari_dgno.samples import load_defocused_nuclei

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["dgno-small-face", "dgno-small-p0dg", "dgno-small-none"]


def test_shipped_models_are_listed_with_the_face_default():
    names = [m["name"] for m in list_models() if m["source"] == "shipped"]
    assert names[: len(SHIPPED)] == SHIPPED or sorted(names) == sorted(SHIPPED)
    assert default_model_name() == "dgno-small-face"
    assert default_model_name(flux="p0dg") == "dgno-small-p0dg"


def recipe_path(config_name: str) -> Path:
    """configs/NAME.yaml, or configs/equal-steps/X.yaml for the equal-step run ``equal-X``."""
    direct = REPO / "configs" / f"{config_name}.yaml"
    if direct.is_file() or not config_name.startswith("equal-"):
        return direct
    return equal_step_recipe(config_name, REPO / "configs")


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_records_the_recipe_it_was_trained_by(name):
    meta = json.loads((shipped_model_dir() / f"{name}.json").read_text())
    # A model made in stages records each stage (``base_training``), back to its first recipe.
    training, stages = meta["training"], []
    while training is not None:
        recipe = yaml.safe_load(recipe_path(training["config"]["name"]).read_text())
        for key in ("steps", "batch_size", "patch", "lr", "seed"):
            assert training["config"][key] == recipe[key], key
        assert training["config"]["model"] == recipe.get("model", {})
        assert training["steps"] == recipe["steps"]
        assert training["data"]["source"] in ("synthetic", "varied")
        assert bool(training["config"]["base_checkpoint"]) == ("base_training" in training)
        stages.append(training["config"]["name"])
        training = training.get("base_training")
    # The first stage's recipe is configs/<name>.yaml, a numbered retraining <name>-v2.yaml ..., or
    # (the other fluxes) the equal-step comparison's run of that flux.
    assert stages[-1] in (name, f"equal-dgno-{meta['flux']}") or stages[-1].startswith(f"{name}-v")
    first = meta["training"]
    while "base_training" in first:
        first = first["base_training"]
    assert first["config"]["model"]["flux"] == meta["flux"]
    # Each stage validates on its own seeded set; the final metrics go with the final stage's input.
    assert meta["metrics"]["psnr"] > meta["training"]["history"][0]["input"]["psnr"] + 2.0
    assert (shipped_model_dir() / f"{name}.train.log").is_file()


def test_default_model_deblurs_the_sample():
    torch.set_num_threads(1)
    sample = load_defocused_nuclei()
    restored = deblur(sample["blurred"], load_model(device="cpu"), device="cpu")
    truth = sample["sharp"].astype(np.float32)
    gain = psnr_ssim(restored, truth)[0] - psnr_ssim(sample["blurred"], truth)[0]
    assert gain > 1.0


def test_shipping_keeps_the_lineage_training_recorded(tmp_path):
    """``scripts/ship_weights.py``: a run's own ``base_training`` (what ``dgno train`` records) is kept
    even when its base file is gone; an older record is completed from the base's JSON."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_weights", REPO / "scripts" / "ship_weights.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    recorded = {
        "steps": 3,
        "base_checkpoint": str(tmp_path / "gone.safetensors"),
        "base_training": {"steps": 2},
    }
    assert ship.lineage({"training": recorded}) == recorded
    (tmp_path / "base.json").write_text(json.dumps({"training": {"steps": 2}}))
    older = {"steps": 3, "base_checkpoint": str(tmp_path / "base.safetensors")}
    assert ship.lineage({"training": older})["base_training"] == {"steps": 2}
