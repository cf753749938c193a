"""The training loop: AdamW + warm-up/cosine, the reference loss, EMA weights, validation, checkpoints.

One ``Trainer`` serves `dgno train`, the fine-tuning dock and the benchmarks' baselines. It reports
through ``Callbacks`` (progress, validation, stop) and never holds a UI. A stopped or killed run keeps
its last complete checkpoint; ``run(resume=True)`` continues from it with the same results as a run
that never stopped (same seed, same batches, same optimiser, scheduler, EMA and RNG state).

A stop is noticed within about one layer of the network, not one step (a step can take many
seconds on a busy CPU): ``should_stop`` is also asked before every submodule's forward and at every
layer's gradient, and a step interrupted that way is dropped whole, as if it had never started.
A fine-tuning run whose base model scores far below the blurred input on the run's own validation
pairs stops before training with a one-line :class:`InputError`: that is a data problem (pairs in
other units, misaligned or mismatched), which training would only bake into the model.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop runs data-parallel: see ``distributed.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..devices import autocast_context, cpu_threads, resolve_device
from ..errors import CheckpointError, InputError
from ..io.checkpoint import checkpoint_paths, load_checkpoint, read_metadata, save_checkpoint
from ..metrics import mean_metrics
from ..model import architecture_of, build_model, count_parameters, preset_config
from ..model.config import NAFNetConfig
from ..model.interrupt import interruptible
from ..normalize import DEFAULT_HIGH, DEFAULT_LOW
from . import distributed
from . import state as ckpt
from .config import TrainConfig
from .losses import multiscale_l1_fft
from .workers import worker_batches

# A base model this far below the blurred input on the run's own validation pairs means the pairs
# are wrong (a good model on other optics loses a few dB at most; pairs in other units lose tens).
DATA_CHECK_DB = 10.0
# A blurred copy of an image scores well above this against it (white noise blurred: ~12 dB); pairs
# below it do not show the same thing in the same units.
MIN_INPUT_PSNR = 5.0


class _StepInterrupted(Exception):
    """Raised inside the network when a stop is requested in the middle of a training step."""


@dataclass
class StepInfo:
    step: int  # steps done so far (1-based after the first step)
    total: int
    loss: float
    lr: float
    seconds: float  # wall time of the run so far


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    on_validation: Callable[[int, dict], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_log: Callable[[str], None] | None = None


class EMA:
    """Exponential moving average of the weights; validation and the exported model use it."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        # Warm-up of the decay so early averages are not dominated by the random initialisation.
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_network(cfg: TrainConfig) -> tuple[torch.nn.Module, dict]:
    """A fresh network from the config, or the base checkpoint's network for fine-tuning."""
    if cfg.base_checkpoint:
        # Weights do not depend on the element size or flux variant, so either may change here.
        base, meta = load_checkpoint(cfg.base_checkpoint)
        config = base.config.replace(**cfg.model) if cfg.model else base.config
        model = build_model(meta["architecture"], config)
        model.load_state_dict(base.state_dict())
        # The base's own record goes along, so a fine-tuned model says every step behind it.
        extra = {"base_checkpoint": str(cfg.base_checkpoint), "preset": meta.get("preset")}
        if isinstance(meta.get("training"), dict):
            extra["base_training"] = meta["training"]
        return model, extra
    if cfg.architecture == "nafnet":
        return build_model("nafnet", NAFNetConfig.from_dict(cfg.model)), {"preset": "nafnet"}
    return build_model("dgno", preset_config(cfg.preset, **cfg.model)), {"preset": cfg.preset}


class Trainer:
    """``source``: an object with ``make_batch`` / ``validation_pairs`` / ``describe``, a zero-argument
    callable that builds one (called here, so in every torchrun process), or None for ``config.data``.

    Under torchrun, rank 0 alone reports (``on_step``, ``on_validation``, ``on_log``) and writes
    files; ``should_stop`` is asked on every rank and a stop on any rank stops them all.
    """

    def __init__(self, config: TrainConfig, source=None, callbacks: Callbacks | None = None):
        from .batches import build_source  # data sources pull in the simulator; import lazily

        self.cfg = config
        self.callbacks = callbacks or Callbacks()
        if source is not None and (isinstance(source, type) or not hasattr(source, "make_batch")):
            source = source()  # a factory
        self.source = source if source is not None else build_source(config.data, config.patch, config.seed)
        self.device = resolve_device(config.device)
        self.dist = distributed.Context.from_env(self.device)
        self.device = self.dist.device
        self.dist.check_batch(config.batch_size)
        self.run_dir = config.run_dir
        self.history: list[dict] = []
        self.stopped = False  # True when should_stop ended the run early
        self.up_to_date = False  # True when a finished run was resumed and its model left as it was

    # -- helpers -------------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.callbacks.on_log and self.dist.is_main:
            self.callbacks.on_log(message)

    def _meta(self, model, step: int, seconds: float, extra: dict) -> dict:
        config = model.config
        return {
            "name": self.cfg.name,
            "architecture": architecture_of(model),
            "config": config.to_dict(),
            "preset": extra.get("preset"),
            "element_size": getattr(config, "element_size", None),
            "flux": getattr(config, "flux", None),
            "normalization": {"method": "percentile", "low": DEFAULT_LOW, "high": DEFAULT_HIGH},
            "training": {
                "config": self.cfg.to_dict(),
                "data": self.source.describe(),
                "steps": step,
                "wall_time_s": round(seconds, 1),
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "parameters": count_parameters(model),
                "history": self.history,
                **{k: v for k, v in extra.items() if k != "preset"},
            },
            "metrics": self.history[-1]["val"] if self.history else {},
            "package_version": __version__,
        }

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> dict:
        model.eval()
        pairs = []
        try:
            for blurred, sharp in self.val_pairs:
                x = torch.from_numpy(blurred)[None, None].to(self.device)
                with autocast_context(self.device, self.cfg.amp):
                    y = model(x)
                pairs.append((y.float().cpu().numpy()[0, 0], sharp))
        finally:
            model.train()
        return mean_metrics(pairs)

    # -- the run -------------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> Path:
        """Train to ``cfg.steps`` (or until stopped); returns the exported checkpoint's stem.

        CPU threads: ``cfg.threads``, else ``$NAPARI_DGNO_THREADS``, else torch's setting; restored
        afterwards (the dock trains in a thread of napari's process)."""
        with distributed.process_group(self.dist), cpu_threads(self.cfg.threads):
            return self._run(resume)

    def _check_data(self, base: dict, inputs: dict) -> None:
        """Refuse to train on pairs that cannot be right (see ``DATA_CHECK_DB``, ``MIN_INPUT_PSNR``)."""
        base_psnr = float(base.get("psnr", math.nan)) if base else math.nan
        input_psnr = float(inputs.get("psnr", math.nan)) if inputs else math.nan
        gap = input_psnr - base_psnr
        if not self.dist.any(bool(gap > DATA_CHECK_DB or input_psnr < MIN_INPUT_PSNR)):
            return
        if not self.dist.is_main:
            raise InputError("data problem found by rank 0; nothing was trained")
        check = (
            "check that each sharp image shows the same field as its blurred one, aligned and in "
            "comparable intensity units. Nothing was trained"
        )
        if input_psnr < MIN_INPUT_PSNR:
            raise InputError(
                f"data problem: the blurred validation images score {input_psnr:.1f} dB against their "
                f"sharp versions, which no blurred copy of an image does; {check}"
            )
        raise InputError(
            f"data problem: the base model scores {base_psnr:.1f} dB on this run's validation pairs, "
            f"{gap:.0f} dB below their blurred input ({input_psnr:.1f} dB); {check}"
        )

    def _run(self, resume: bool) -> Path:
        cfg, main = self.cfg, self.dist.is_main
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        model, extra = build_network(cfg)
        model.to(self.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        ema = EMA(model, cfg.ema_decay)
        start, seconds = 0, 0.0
        if resume:
            start, seconds = self._resume(model, optimizer, scheduler, ema, rng)
        self.dist.same(start, "the step to resume from")  # also a barrier: nobody prunes while others read
        # A queue resumes finished runs every session: rewriting the same model would only change a
        # committed file's timestamp and checksum, and a finished run whose checkpoints were removed
        # (only its model is kept) must not train again from scratch. Checked before the validation
        # pairs are simulated, which cost seconds for nothing here.
        finished = start if start >= cfg.steps else (cfg.steps if resume and start == 0 else 0)
        if finished and self._exported_at(finished):
            self.up_to_date = True
            self._log(f"{cfg.name}: finished at step {finished}; its model is already up to date")
            return self.run_dir / cfg.name
        # Only rank 0 validates: the other ranks need no validation set.
        self.val_pairs = (
            self.source.validation_pairs(cfg.val_size, cfg.val_patch, cfg.seed + 10_000) if main else []
        )
        # One process: a stop lands inside a step or a validation. Under DDP all ranks agree once a step.
        stop_inside = None if self.dist.enabled else self.callbacks.should_stop
        with interruptible(model, stop_inside, _StepInterrupted, armed=False) as switch:
            if start == 0:
                self.history = [{"step": 0, "val": {}, "input": mean_metrics(self.val_pairs) if main else {}}]
                if cfg.base_checkpoint and main:
                    # Where fine-tuning starts from: later numbers then read as gains over the base
                    # model on this run's data, not only over the blurred input.
                    metrics = self._interruptible(switch, self.validate, model)
                    if metrics is not None:
                        self.history[0]["val"] = metrics
                        self._report_validation(0, metrics, "base model")
                if not self.stopped:
                    self._check_data(self.history[0]["val"], self.history[0]["input"])
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ddp = self.dist.wrap(model)  # None for one process
            t0 = time.perf_counter() - seconds
            step = start
            drawn = None
            if cfg.data_workers:
                drawn = worker_batches(
                    self.source, cfg.batch_size, cfg.seed, start, cfg.steps, cfg.data_workers
                )
            self._log(f"{cfg.name}: steps {start}..{cfg.steps}, {count_parameters(model):,} parameters")
            while step < cfg.steps and not self.stopped:
                if self.dist.any(bool(self.callbacks.should_stop and self.callbacks.should_stop())):
                    self.stopped = True
                    break
                before = rng.bit_generator.state  # an interrupted step draws its batch again on resume
                batch = next(drawn) if drawn is not None else self.source.make_batch(cfg.batch_size, rng)
                loss = self._interruptible(switch, self._step, model, ddp, optimizer, batch)
                if loss is None:
                    optimizer.zero_grad(set_to_none=True)
                    rng.bit_generator.state = before
                    self._log(f"stopped during step {step + 1}; it is dropped, step {step} is kept")
                    break
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                ema.update(model, step)
                step += 1
                # Under DDP: the global batch's loss, averaged over ranks (a collective: every rank joins).
                loss_value = self.dist.mean(loss.detach()) if self.dist.enabled else None
                if self.callbacks.on_step and main:
                    info = StepInfo(
                        step,
                        cfg.steps,
                        float(loss.detach()) if loss_value is None else loss_value,
                        scheduler.get_last_lr()[0],
                        time.perf_counter() - t0,
                    )
                    self.callbacks.on_step(info)
                if (step % cfg.val_every == 0 or step == cfg.steps) and main:
                    # a stop here keeps the finished step: its checkpoint is written below
                    self._interruptible(switch, self._validate_with_ema, model, ema, step)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._save_state(
                        model, optimizer, scheduler, ema, rng, step, time.perf_counter() - t0, extra
                    )
        if self.stopped and step < cfg.steps:
            self._log(f"stopped at step {step}")
        if step % cfg.checkpoint_every and step != cfg.steps and step > start:
            self._save_state(model, optimizer, scheduler, ema, rng, step, time.perf_counter() - t0, extra)
        return self.export(model, ema, step, time.perf_counter() - t0, extra)

    def _exported_at(self, step: int) -> bool:
        """Whether the run's model is on disk and was exported at ``step``."""
        stem = self.run_dir / self.cfg.name
        try:
            return checkpoint_paths(stem)[0].is_file() and read_metadata(stem)["training"]["steps"] == step
        except (CheckpointError, KeyError, TypeError):
            return False

    def _interruptible(self, switch, work, *args):
        """``work(*args)`` with the stop check armed inside the network; None (and ``stopped``) when
        a stop interrupted it."""
        try:
            switch.armed = True
            return work(*args)
        except _StepInterrupted:
            self.stopped = True
            return None
        finally:
            switch.armed = False

    def _step(self, model, ddp, optimizer, batch) -> torch.Tensor:
        """Forward and backward of one batch (gradients left in the parameters); returns the loss."""
        cfg = self.cfg
        # Every rank draws the same global batch and keeps its slice (see distributed.py).
        blurred, sharp = (self.dist.shard(t) for t in batch)
        blurred, sharp = blurred.to(self.device), sharp.to(self.device)
        with autocast_context(self.device, cfg.amp):
            outputs = model.forward_multiscale(blurred) if ddp is None else ddp(blurred)
        loss = multiscale_l1_fft(outputs, sharp, cfg.fft_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def _validate_with_ema(self, model, ema, step: int) -> None:
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
        try:
            metrics = self.validate(model)
        finally:  # also when a stop interrupts it: training goes on from the live weights
            model.load_state_dict(live)
        self.history.append({"step": step, "val": metrics})
        self._report_validation(step, metrics, f"step {step}")

    def _report_validation(self, step: int, metrics: dict, what: str) -> None:
        self._log(f"{what}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}")
        if self.callbacks.on_validation:
            self.callbacks.on_validation(step, metrics)

    def _save_state(self, model, optimizer, scheduler, ema, rng, step, seconds, extra) -> None:
        """Rank 0 writes the checkpoint; every rank waits until it is complete."""
        if self.dist.is_main:
            self._write_state(model, optimizer, scheduler, ema, rng, step, seconds, extra)
        self.dist.barrier()

    def _write_state(self, model, optimizer, scheduler, ema, rng, step, seconds, extra) -> None:
        opt_tensors, opt_plain = ckpt.optimizer_tensors(optimizer)
        rng_tensors, rng_plain = ckpt.rng_state(rng)

        meta = self._meta(model, step, seconds, extra)
        meta["resume"] = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "optimizer": opt_plain,
            "rng": rng_plain,
            "seconds": seconds,
        }
        stem = ckpt.stem_for(self.run_dir, step)
        save_checkpoint(
            stem, model, meta, extra_tensors={"optim": opt_tensors, "rng": rng_tensors, "ema": ema.shadow}
        )
        ckpt.prune(self.run_dir)

    def _resume(self, model, optimizer, scheduler, ema, rng) -> tuple[int, float]:
        if self.dist.is_main:
            ckpt.remove_temporaries(self.run_dir)  # left by a run killed while writing
        for step, stem in ckpt.checkpoints(self.run_dir):
            try:
                saved, meta = load_checkpoint(stem)
                tensors = ckpt.load_state_tensors(stem, meta)
            except CheckpointError as exc:
                self._log(f"skipping damaged checkpoint {stem.name}: {exc}")
                continue
            self._check_same_network(saved, model, stem)
            try:
                model.load_state_dict(saved.state_dict())
                resume = meta["resume"]
                ckpt.restore_optimizer(optimizer, tensors["optim"], resume["optimizer"])
                scheduler.load_state_dict(resume["scheduler"])
                ckpt.restore_rng(rng, tensors["rng"], resume["rng"])
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                # Usually the config changed under the same run name: a traceback would not say so.
                reason = " ".join(str(exc).split())[:200]
                raise CheckpointError(
                    f"cannot resume from {stem}: it does not fit this training config ({reason}); "
                    "start again with --no-resume or use another --name"
                ) from None
            live = model.state_dict()  # the averages take the weights' device and layout
            ema.shadow = {k: torch.empty_like(live[k]).copy_(v) for k, v in tensors["ema"].items()}
            self.history = meta["training"]["history"]
            self._log(f"resumed from {stem.name}")
            return step, float(resume["seconds"])
        return 0, 0.0

    @staticmethod
    def _check_same_network(saved, model, stem: Path) -> None:
        """The run's name is reused with another network: say so instead of a state_dict traceback."""
        a, b = saved.state_dict(), model.state_dict()
        if a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a):
            return  # run-time options (element size, flux) may change: the weights fit
        old, new = saved.config.to_dict(), model.config.to_dict()
        changes = [
            f"{k}: {old.get(k)} -> {new.get(k)}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        what = ", ".join(changes[:3]) or f"{architecture_of(saved)} -> {architecture_of(model)}"
        raise CheckpointError(
            f"cannot resume from {stem}: its network differs from this config's ({what}); "
            "start again with --no-resume or use another --name"
        )

    def export(self, model, ema, step: int, seconds: float, extra: dict) -> Path:
        """Write the EMA weights as the run's model: ``runs/NAME/NAME.safetensors`` + JSON."""
        stem = self.run_dir / self.cfg.name
        if self.dist.is_main:
            live = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ema.copy_to(model)
            save_checkpoint(stem, model, self._meta(model, step, seconds, extra))
            model.load_state_dict(live)
        self.dist.barrier()
        return stem
