"""DeblurOptions / DeblurReport: one options object from the caller to the engine, one report back,
and the model and device resolved once per call."""

import numpy as np
import pytest

from napari_dgno import deblur, registry
from napari_dgno.io import save_checkpoint
from napari_dgno.model import build_model, preset_config
from napari_dgno.options import DeblurOptions


def test_keywords_that_differ_from_their_defaults_go_on_top_of_the_options():
    base = DeblurOptions(tile=256, flux="p0dg", threads=2)
    assert base.overridden(tile="auto", flux=None) is base  # defaults change nothing
    assert base.overridden(tile=128).tile == 128 and base.overridden(tile=128).flux == "p0dg"
    with pytest.raises(AttributeError):
        base.tile = 64  # frozen: safe to hand to another thread or a dask worker


def test_the_fingerprint_holds_what_changes_the_result_and_nothing_else():
    a = DeblurOptions(element_size=16, flux="face", tile=256, overlap=128)
    assert a.fingerprint() == {
        "element_size": 16, "flux": "face", "tile": 256, "overlap": 128, "normalize": "plane",
    }  # fmt: skip
    assert a.replace(normalize="stack").fingerprint()["normalize"] == "stack"  # it changes stacks
    assert a.replace(threads=1, device="cpu", mixed_precision=False).fingerprint() == a.fingerprint()
    # outputs finished before self-ensembling existed keep their key; with it on, the key differs
    assert a.replace(self_ensemble=True).fingerprint() == {**a.fingerprint(), "self_ensemble": True}


def test_the_model_and_the_device_are_resolved_once_per_call(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "m", build_model("dgno", preset_config("tiny")), {"preset": "tiny"})
    counts = {"model": 0, "device": 0}
    real_model, real_device = registry.resolve_model, registry.resolve_device

    def count_model(*args, **kwargs):
        counts["model"] += 1
        return real_model(*args, **kwargs)

    def count_device(*args, **kwargs):
        counts["device"] += 1
        return real_device(*args, **kwargs)

    monkeypatch.setattr(registry, "resolve_model", count_model)
    monkeypatch.setattr(registry, "resolve_device", count_device)
    from napari_dgno.inference import engine

    monkeypatch.setattr(engine, "resolve_model", count_model)
    info: dict = {}
    out = deblur(
        np.random.default_rng(0).random((2, 40, 48), dtype=np.float32),
        tmp_path / "m",
        device="cpu",
        info=info,
    )
    assert out.shape == (2, 40, 48) and info["planes"] == 2 and info["device"] == "cpu"
    assert counts == {"model": 1, "device": 1}
