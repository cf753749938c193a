"""Checkpoints: safetensors + JSON round trips, atomic saves, and one-line refusals of bad files."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from napari_dgno.errors import CheckpointError
from napari_dgno.io import checkpoint as ck
from napari_dgno.io import load_checkpoint, load_extra_tensors, read_metadata, save_checkpoint
from napari_dgno.model import NAFNetConfig, build_model, count_parameters, preset_config

META_KEYS = {
    "format", "format_version", "name", "architecture", "config", "preset", "element_size", "flux",
    "normalization", "training", "metrics", "package_version", "created",
}  # fmt: skip


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return build_model("dgno", preset_config("tiny"))


@pytest.fixture
def saved(tmp_path, tiny):
    meta = {"preset": "tiny", "training": {"steps": 3, "data": "synthetic"}, "metrics": {"psnr": 30.5}}
    save_checkpoint(tmp_path / "m", tiny, meta)
    return tmp_path / "m"


def assert_one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    for word in words:
        assert word.lower() in message.lower(), message


def test_round_trip_dgno(saved, tiny):
    model, meta = load_checkpoint(saved)
    assert not model.training
    assert META_KEYS <= set(meta)
    assert meta["format"] == "napari-dgno-checkpoint" and meta["format_version"] == 1
    assert meta["architecture"] == "dgno" and meta["name"] == "m" and meta["preset"] == "tiny"
    assert meta["element_size"] == 8 and meta["flux"] == "face"
    assert meta["normalization"] == {"method": "percentile", "low": 1.0, "high": 99.8}
    assert meta["training"]["steps"] == 3 and meta["metrics"]["psnr"] == 30.5
    assert meta["params"] == count_parameters(tiny)
    assert model.config == tiny.config
    for key, value in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), tiny.eval()(x))


@pytest.mark.parametrize("suffix", ["", ".safetensors", ".json"])
def test_accepts_stem_and_either_file(saved, suffix):
    model, meta = load_checkpoint(str(saved) + suffix)
    assert meta["name"] == "m"


def test_round_trip_nafnet_and_runtime_options(tmp_path):
    net = build_model("nafnet", NAFNetConfig(width=8, enc_blocks=(1, 1), dec_blocks=(1, 1)))
    save_checkpoint(tmp_path / "baseline", net, {"name": "cnn"})
    model, meta = load_checkpoint(tmp_path / "baseline.json")
    assert meta["architecture"] == "nafnet" and meta["name"] == "cnn"
    assert type(model).__name__ == "NAFNet"
    # element size and flux are run-time options: the JSON may pick others than the config's
    dg = build_model("dgno", preset_config("tiny"))
    save_checkpoint(tmp_path / "e16", dg, {"element_size": 16, "flux": "p0dg"})
    assert read_metadata(tmp_path / "e16")["element_size"] == 16
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "bad", dg, {"element_size": 6})


def test_extra_tensors_go_to_a_state_file(tmp_path, tiny):
    extra = {"optimizer": {"exp_avg.0": torch.ones(3), "exp_avg.1": torch.zeros(2, 2)}, "ema": torch.ones(4)}
    save_checkpoint(tmp_path / "run", tiny, {}, extra_tensors=extra)
    assert (tmp_path / "run.state.safetensors").is_file()
    state = load_extra_tensors(tmp_path / "run")
    assert torch.equal(state["optimizer"]["exp_avg.1"], torch.zeros(2, 2))
    assert torch.equal(load_extra_tensors(tmp_path / "run.json", "ema"), torch.ones(4))
    load_checkpoint(tmp_path / "run")  # inference ignores the state file
    assert load_extra_tensors(tmp_path / "nothing") == {}


def test_read_metadata_needs_no_tensors(saved):
    Path(str(saved) + ".safetensors").unlink()
    assert read_metadata(saved)["preset"] == "tiny"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "not found", "m.safetensors")


def test_save_is_atomic(tmp_path, tiny, monkeypatch):
    save_checkpoint(tmp_path / "m", tiny, {"metrics": {"step": 1}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    import safetensors.torch

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    other = build_model("dgno", preset_config("tiny"))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m", other, {"metrics": {"step": 2}})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # old pair untouched, no temporary files left
    load_checkpoint(tmp_path / "m")


def test_pair_from_different_saves_is_refused(tmp_path, tiny):
    save_checkpoint(tmp_path / "m", tiny, {})
    old_json = (tmp_path / "m.json").read_text()
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "m", build_model("dgno", preset_config("tiny")), {})
    (tmp_path / "m.json").write_text(old_json)  # as if the JSON rename never happened
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "m")
    assert_one_line_error(err, "SHA-256")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "nope")
    assert_one_line_error(err, "not found", "nope")
    with pytest.raises(CheckpointError):
        read_metadata(tmp_path / "nope.json")


@pytest.mark.parametrize("keep", [0, 7, 100, -100])
def test_truncated_or_corrupt_tensors(saved, keep):
    weights = Path(str(saved) + ".safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    meta = json.loads(Path(str(saved) + ".json").read_text())
    meta.pop("weights")  # reach the file checks, not the hash check
    Path(str(saved) + ".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "m.safetensors")


def test_garbage_tensor_file(saved):
    Path(str(saved) + ".safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err)


def test_invalid_json(saved):
    Path(str(saved) + ".json").write_text('{"format": "napari-dgno-checkpoint", "config": ')
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "not valid JSON")


def _edit_json(saved, **changes):
    path = Path(str(saved) + ".json")
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))
    return meta


def test_json_that_lies_about_shapes(saved):
    meta = json.loads(Path(str(saved) + ".json").read_text())
    config = dict(meta["config"], width=16, heads=4)
    _edit_json(saved, config=config, weights=None)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "does not match", "shapes")
    config = dict(meta["config"], dec_layers=[2, 1, 1])
    _edit_json(saved, config=config)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "missing tensors")


def test_wrong_or_unknown_architecture(saved):
    _edit_json(saved, architecture="unet")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "unknown architecture", "unet")
    _edit_json(saved, architecture="nafnet", config={"width": 8}, weights=None)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "does not match")


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"format": "something-else"}, ["not a napari-dgno checkpoint"]),
        ({"format_version": 99}, ["newer"]),
        ({"element_size": 6}, ["element size"]),
        ({"flux": "upwind"}, ["flux"]),
        ({"config": {"width": "wide"}}, ["invalid dgno config"]),
        ({"config": {"colour": 3}}, ["invalid dgno config"]),
        ({"config": None}, ["missing keys"]),
    ],
)
def test_invalid_metadata(saved, changes, words):
    _edit_json(saved, **changes)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, *words)


class _Payload:
    """Unpickling this would create a marker file: proof that nothing is ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_files_are_refused_by_name(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert_one_line_error(err, "pickle")
    with pytest.raises(CheckpointError) as err:  # found next to a missing pair: named in the message
        load_checkpoint(tmp_path / "model")
    assert_one_line_error(err, "pickle")
    assert not marker.exists()


def test_pickle_content_is_refused(saved, tmp_path, tiny):
    marker = tmp_path / "pwned"
    weights = Path(str(saved) + ".safetensors")
    weights.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    _edit_json(saved, weights=None)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "pickle")
    torch.save(tiny.state_dict(), weights)  # torch.save's zip container (pickle inside)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "pickle")
    assert not marker.exists()


def test_nan_weights_are_refused(saved, tiny):
    state = {k: v.contiguous().clone() for k, v in tiny.state_dict().items()}  # safetensors wants it
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].fill_(float("nan"))
    from safetensors.torch import save_file

    save_file(state, str(saved) + ".safetensors")
    _edit_json(saved, weights=None)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert_one_line_error(err, "NaN")


def test_checkpoint_paths_keep_dotted_names():
    weights, meta = ck.checkpoint_paths("runs/model-v1.2")
    assert weights.name == "model-v1.2.safetensors" and meta.name == "model-v1.2.json"
    assert ck.checkpoint_paths("a/b.state.safetensors")[1].name == "b.json"
