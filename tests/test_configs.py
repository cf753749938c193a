"""Every training recipe in configs/ loads and builds its network; the equal-step comparison is equal."""

from pathlib import Path

import pytest
import yaml

from napari_dgno.train.config import TrainConfig
from napari_dgno.train.engine import build_network

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_recipe_loads_and_builds(path):
    cfg = TrainConfig.from_yaml(path)
    net, _ = build_network(cfg)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_equal_step_runs_differ_only_in_the_network():
    recipes = {
        p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "configs" / "equal-steps").glob("*.yaml")
    }
    assert {"dgno-face", "dgno-face-nogate", "dgno-p0dg", "dgno-none", "global-no", "nafnet"} <= set(recipes)
    network_keys = {"name", "architecture", "preset", "model"}
    shared = [{k: v for k, v in r.items() if k not in network_keys} for r in recipes.values()]
    assert all(s == shared[0] for s in shared)
    assert shared[0]["data"]["source"] == "varied"
