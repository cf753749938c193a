"""Every training recipe in configs/ loads and builds its network; the equal-step comparison is equal."""

from pathlib import Path

import pytest
import yaml

from napari_dgno.train.config import TrainConfig
from napari_dgno.train.engine import build_network

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _recipe_named(name: str) -> Path:
    matches = [p for p in CONFIGS if yaml.safe_load(p.read_text()).get("name", p.stem) == name]
    assert len(matches) == 1, f"no single recipe named {name!r} in configs/"
    return matches[0]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_recipe_loads_and_builds(path):
    cfg = TrainConfig.from_yaml(path)
    base = cfg.base_checkpoint and Path(cfg.base_checkpoint)
    if base and base.parts[0] == "training" and not (REPO / base).exists():
        # A later stage starts from an earlier stage's run output (not kept once shipped): that
        # stage's recipe must be here, and it must build the network this stage continues.
        assert base.parent.name == base.stem, "a run's model is training/NAME/NAME.safetensors"
        earlier = TrainConfig.from_yaml(_recipe_named(base.stem))
        assert earlier.base_checkpoint != cfg.base_checkpoint
        net, _ = build_network(earlier)
        assert (earlier.architecture, earlier.preset) == (cfg.architecture, cfg.preset)
        assert not cfg.model, "a later stage keeps its base's network"
    else:
        net, _ = build_network(cfg)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_no_recipe_starts_from_a_shipped_model():
    # Shipping a stage replaces the shipped file, so a recipe based on it would start from itself.
    for path in CONFIGS:
        base = TrainConfig.from_yaml(path).base_checkpoint
        assert not base or "src/napari_dgno/weights" not in str(base), path


def test_equal_step_runs_differ_only_in_the_network():
    recipes = {
        p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "configs" / "equal-steps").glob("*.yaml")
    }
    assert {"dgno-face", "dgno-face-nogate", "dgno-p0dg", "dgno-none", "global-no", "nafnet"} <= set(recipes)
    network_keys = {"name", "architecture", "preset", "model"}
    shared = [{k: v for k, v in r.items() if k not in network_keys} for r in recipes.values()]
    assert all(s == shared[0] for s in shared)
    assert shared[0]["data"]["source"] == "varied"
