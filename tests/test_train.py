"""The training engine: loss, schedule, checkpoints, stop, and exact resume."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dgno.errors import CheckpointError
from napari_dgno.io.checkpoint import load_checkpoint
from napari_dgno.train import state as ckpt
from napari_dgno.train.config import TrainConfig
from napari_dgno.train.engine import Callbacks, Trainer, build_network, lr_factor
from napari_dgno.train.losses import multiscale_l1_fft


class TinySource:
    """A deterministic in-memory source: blurred = box-blurred sharp, drawn from the given rng."""

    def __init__(self, patch=32):
        self.patch = patch

    def _pair(self, rng):
        sharp = rng.random((1, self.patch, self.patch)).astype(np.float32)
        blurred = (sharp + np.roll(sharp, 1, -1) + np.roll(sharp, 1, -2)) / 3
        return torch.from_numpy(blurred), torch.from_numpy(sharp)

    def make_batch(self, batch_size, rng):
        pairs = [self._pair(rng) for _ in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def validation_pairs(self, n, patch, seed):
        rng = np.random.default_rng(seed)
        return [tuple(t[0].numpy() for t in self._pair(rng)) for _ in range(n)]

    def describe(self):
        return {"source": "tiny test source"}


def _config(tmp_path, **overrides):
    base = dict(
        name="t",
        preset="tiny",
        model={"element_size": 8},
        patch=32,
        batch_size=2,
        steps=6,
        lr=1e-3,
        warmup_steps=2,
        val_every=3,
        val_size=2,
        val_patch=32,
        checkpoint_every=2,
        seed=3,
        threads=1,
        output_dir=str(tmp_path),
    )
    return TrainConfig.from_dict({**base, **overrides})


def _weights(stem):
    model, _ = load_checkpoint(stem)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loss_is_zero_for_perfect_outputs_and_positive_otherwise():
    target = torch.rand(2, 1, 32, 32)
    perfect = [torch.nn.functional.avg_pool2d(target, 4), torch.nn.functional.avg_pool2d(target, 2), target]
    assert float(multiscale_l1_fft(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(multiscale_l1_fft([target + 0.1], target)) > 0.1


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert lr_factor(100, cfg) == pytest.approx(1e-2)


def test_run_exports_a_loadable_model_with_its_training_record(tmp_path):
    stem = Trainer(_config(tmp_path), source=TinySource()).run()
    model, meta = load_checkpoint(stem)
    assert meta["training"]["steps"] == 6
    assert meta["training"]["data"] == {"source": "tiny test source"}
    assert [h["step"] for h in meta["training"]["history"]] == [0, 3, 6]
    assert set(meta["metrics"]) == {"psnr", "ssim"}
    assert meta["element_size"] == 8 and meta["flux"] == "face"
    # Only the newest two numbered checkpoints are kept.
    assert [s for s, _ in ckpt.checkpoints(tmp_path / "t")] == [6, 4]


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    straight = Trainer(_config(tmp_path / "a"), source=TinySource()).run()
    done = {"steps": 0}

    def count(info):
        done["steps"] = info.step

    stopped = Trainer(
        _config(tmp_path / "b"),
        source=TinySource(),
        callbacks=Callbacks(on_step=count, should_stop=lambda: done["steps"] >= 4),
    )
    stopped.run()
    assert [s for s, _ in ckpt.checkpoints(tmp_path / "b" / "t")][0] == 4
    resumed = Trainer(_config(tmp_path / "b"), source=TinySource()).run(resume=True)
    a, b = _weights(straight), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_resuming_a_finished_run_leaves_its_model_as_it_was(tmp_path):
    first = Trainer(_config(tmp_path), source=TinySource())
    stem = first.run()
    assert not first.up_to_date
    files = [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    again = Trainer(_config(tmp_path), source=TinySource())
    assert again.run(resume=True) == stem and again.up_to_date
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    # Only the model kept (the run's checkpoints removed to save space): still finished.
    for _, checkpoint in ckpt.checkpoints(tmp_path / "t"):
        for suffix in (".json", ".safetensors", ".state.safetensors"):
            Path(str(checkpoint) + suffix).unlink(missing_ok=True)
    kept = Trainer(_config(tmp_path), source=TinySource())
    assert kept.run(resume=True) == stem and kept.up_to_date
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    # Asked to train longer than the model's steps, or with --no-resume, it trains.
    longer = Trainer(_config(tmp_path, steps=8), source=TinySource())
    longer.run(resume=True)
    assert not longer.up_to_date and load_checkpoint(stem)[1]["training"]["steps"] == 8


class StopInside:
    """``should_stop`` that turns true in the middle of step ``at`` (after ``calls`` checks inside it)."""

    def __init__(self, at, calls):
        self.at, self.calls, self.step, self.inside, self.fired = at, calls, 0, 0, None

    def on_step(self, info):
        self.step = info.step

    def __call__(self):
        if self.step + 1 == self.at:
            self.inside += 1
            if self.inside > self.calls:
                self.fired = self.fired or time.perf_counter()
                return True
        return False


@pytest.mark.parametrize("calls", [3, 60])  # in the forward pass, in the backward pass
def test_a_stop_inside_a_step_drops_that_step_and_resume_is_still_exact(tmp_path, calls):
    straight = Trainer(_config(tmp_path / "a"), source=TinySource()).run()
    stop = StopInside(at=4, calls=calls)
    stopped = Trainer(
        _config(tmp_path / "b"),
        source=TinySource(),
        callbacks=Callbacks(on_step=stop.on_step, should_stop=stop),
    )
    stopped.run()
    assert stopped.stopped and stop.fired
    assert ckpt.checkpoints(tmp_path / "b" / "t")[0][0] == 3  # step 4 never happened
    resumed = Trainer(_config(tmp_path / "b"), source=TinySource()).run(resume=True)
    a, b = _weights(straight), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_a_stop_lands_within_a_layer_not_a_step(tmp_path, monkeypatch):
    """Every layer takes 30 ms (a step takes seconds): Stop still returns in well under a second."""
    from napari_dgno.train import engine

    def slow_network(cfg):
        model, extra = build_network(cfg)
        for block in list(model.modules())[1:]:
            block.register_forward_pre_hook(lambda *_: time.sleep(0.03))
        return model, extra

    monkeypatch.setattr(engine, "build_network", slow_network)
    stop = StopInside(at=1, calls=5)
    callbacks = Callbacks(on_step=stop.on_step, should_stop=stop)
    trainer = Trainer(_config(tmp_path, steps=2), source=TinySource(), callbacks=callbacks)
    trainer.run()
    assert trainer.stopped and time.perf_counter() - stop.fired < 0.5
    assert not ckpt.checkpoints(tmp_path / "t")  # nothing was trained: no checkpoint claims a step


def _damage(run_dir, how):
    newest = run_dir / "step-000004"
    weights, state, meta = (Path(f"{newest}{s}") for s in (".safetensors", ".state.safetensors", ".json"))
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "truncated state":
        state.write_bytes(state.read_bytes()[:-50])
    elif how == "state from another save":  # a kill while step 4 was being rewritten
        state.write_bytes(Path(f"{run_dir / 'step-000002'}.state.safetensors").read_bytes())
    elif how == "garbage json":
        meta.write_text('{"format": "napari-dgno-checkpoint", "resume": ')


@pytest.mark.parametrize(
    "how", ["truncated weights", "truncated state", "state from another save", "garbage json"]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    Trainer(_config(tmp_path, steps=4), source=TinySource()).run()
    _damage(tmp_path / "t", how)
    logs = []
    trainer = Trainer(
        _config(tmp_path, steps=6), source=TinySource(), callbacks=Callbacks(on_log=logs.append)
    )
    trainer.run(resume=True)
    skipped = [m for m in logs if "skipping damaged checkpoint step-000004" in m]
    assert len(skipped) == 1 and "\n" not in skipped[0]
    assert any("resumed from step-000002" in m for m in logs)


def test_resuming_with_another_architecture_is_one_clear_error(tmp_path):
    Trainer(_config(tmp_path, steps=2), source=TinySource()).run()
    changed = _config(tmp_path, steps=4, model={"element_size": 8, "width": 16})
    with pytest.raises(CheckpointError) as err:
        Trainer(changed, source=TinySource()).run(resume=True)
    message = str(err.value)
    assert "\n" not in message and "--no-resume" in message and "step-000002" in message


def test_fine_tuning_starts_from_the_base_weights(tmp_path):
    base = Trainer(_config(tmp_path / "base", steps=2), source=TinySource()).run()
    cfg = _config(tmp_path / "ft", steps=0, base_checkpoint=str(base), model={"element_size": 16})
    tuned = Trainer(cfg, source=TinySource()).run()
    a, b = _weights(base), _weights(tuned)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(tuned.with_suffix(".json").read_text())["element_size"] == 16


def test_fine_tuning_records_the_base_model_on_its_own_validation_set(tmp_path):
    base = Trainer(_config(tmp_path / "base", steps=2), source=TinySource()).run()
    seen = []
    cfg = _config(tmp_path / "ft", steps=2, base_checkpoint=str(base))
    trainer = Trainer(
        cfg, source=TinySource(), callbacks=Callbacks(on_validation=lambda s, m: seen.append(s))
    )
    tuned = trainer.run()
    first = json.loads(tuned.with_suffix(".json").read_text())["training"]["history"][0]
    assert first["step"] == 0 and np.isfinite(first["val"]["psnr"]) and "psnr" in first["input"]
    assert seen[0] == 0
    fresh = Trainer(_config(tmp_path / "fresh", steps=2), source=TinySource()).run()
    assert json.loads(fresh.with_suffix(".json").read_text())["training"]["history"][0]["val"] == {}


def test_a_fine_tuned_model_records_every_step_behind_it(tmp_path):
    from napari_dgno.io.catalog import training_summary

    base = Trainer(_config(tmp_path / "base", steps=2), source=TinySource()).run()
    once = Trainer(_config(tmp_path / "ft", steps=3, base_checkpoint=str(base)), source=TinySource()).run()
    twice = Trainer(_config(tmp_path / "ft2", steps=1, base_checkpoint=str(once)), source=TinySource()).run()
    meta = json.loads(twice.with_suffix(".json").read_text())
    assert meta["training"]["base_training"]["base_training"]["steps"] == 2
    assert training_summary(meta)["steps"] == 1 + 3 + 2


def test_smoke_config_runs_the_real_recipe(tmp_path):
    cfg = TrainConfig.from_yaml("configs/smoke.yaml", output_dir=str(tmp_path))
    stem = Trainer(cfg).run()
    _, meta = load_checkpoint(stem)
    assert meta["training"]["data"]["source"] == "synthetic"
    assert np.isfinite(meta["metrics"]["psnr"])


def test_a_config_without_a_name_is_named_after_its_file(tmp_path):
    path = tmp_path / "my-microscope.yaml"
    path.write_text("steps: 3\n")
    assert TrainConfig.from_yaml(path).name == "my-microscope"
    assert TrainConfig.from_yaml(path, name="other").name == "other"


class OtherUnits(TinySource):
    """Sharp targets in other units than the blurred inputs (x 1000): no blurred copy scores that."""

    def _pair(self, rng):
        blurred, sharp = super()._pair(rng)
        return blurred, sharp * 1000


def test_pairs_that_cannot_match_stop_before_training(tmp_path):
    from napari_dgno.errors import InputError

    with pytest.raises(InputError, match="data problem: the blurred validation images score") as info:
        Trainer(_config(tmp_path), source=OtherUnits()).run()
    assert "\n" not in str(info.value) and not ckpt.checkpoints(tmp_path / "t")


def test_a_base_model_far_below_the_input_is_a_data_problem(tmp_path, monkeypatch):
    from napari_dgno.errors import InputError

    base = Trainer(_config(tmp_path / "base", steps=2), source=TinySource()).run()
    monkeypatch.setattr(Trainer, "validate", lambda self, model: {"psnr": -40.0, "ssim": 0.0})
    cfg = _config(tmp_path / "ft", steps=4, base_checkpoint=str(base))
    with pytest.raises(
        InputError, match=r"data problem: the base model scores -40.0 dB .* below their blurred"
    ):
        Trainer(cfg, source=TinySource()).run()
    assert not ckpt.checkpoints(tmp_path / "ft" / "t")


def test_threads_follow_the_environment_when_the_config_has_none(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "2")
    before = torch.get_num_threads()
    cfg = _config(tmp_path, steps=2, threads=None)
    Trainer(
        cfg, source=TinySource(), callbacks=Callbacks(on_step=lambda i: seen.append(torch.get_num_threads()))
    ).run()
    assert seen == [2, 2] and torch.get_num_threads() == before  # restored afterwards
    Trainer(
        _config(tmp_path / "b", steps=1, threads=1),
        source=TinySource(),
        callbacks=Callbacks(on_step=lambda i: seen.append(torch.get_num_threads())),
    ).run()
    assert seen[-1] == 1


def test_worker_processes_draw_batches_by_step_and_resume_exactly(tmp_path):
    """data_workers: step k's batch comes from (seed, k), whatever the number of workers."""
    from napari_dgno.train.workers import StepBatches, step_generator, worker_batches

    source = TinySource()
    drawn = list(worker_batches(source, 2, 3, 2, 5, workers=2))
    assert len(drawn) == 3
    for step, (blurred, sharp) in zip(range(2, 5), drawn, strict=True):
        b, s = source.make_batch(2, step_generator(3, step))
        torch.testing.assert_close(blurred, b)
        torch.testing.assert_close(sharp, s)
    torch.testing.assert_close(StepBatches(source, 2, 3)[4][0], drawn[-1][0])

    straight = Trainer(_config(tmp_path / "a", data_workers=2), source=TinySource()).run()
    done = {"steps": 0}
    stopped = Trainer(
        _config(tmp_path / "b", data_workers=1),
        source=TinySource(),
        callbacks=Callbacks(
            on_step=lambda info: done.update(steps=info.step), should_stop=lambda: done["steps"] >= 4
        ),
    )
    stopped.run()
    resumed = Trainer(_config(tmp_path / "b", data_workers=2), source=TinySource()).run(resume=True)
    a, b = _weights(straight), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="data_workers"):
        _config(tmp_path, data_workers=-1)
