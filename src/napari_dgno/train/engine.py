"""The training loop: AdamW + warm-up/cosine, the reference loss, EMA weights, validation, checkpoints.

One ``Trainer`` serves `dgno train`, the fine-tuning dock and the benchmarks' baselines. It reports
through ``Callbacks`` (progress, validation, stop) and never holds a UI. A stopped or killed run keeps
its last complete checkpoint; ``run(resume=True)`` continues from it with the same results as a run
that never stopped (same seed, same batches, same optimiser, scheduler, EMA and RNG state).
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
from ..errors import CheckpointError
from ..inference.devices import autocast_context, resolve_device
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..metrics import mean_metrics
from ..model import architecture_of, build_model, count_parameters, preset_config
from ..model.config import NAFNetConfig
from ..normalize import DEFAULT_HIGH, DEFAULT_LOW
from . import state as ckpt
from .config import TrainConfig
from .losses import multiscale_l1_fft


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
        return model, {"base_checkpoint": str(cfg.base_checkpoint), "preset": meta.get("preset")}
    if cfg.architecture == "nafnet":
        return build_model("nafnet", NAFNetConfig.from_dict(cfg.model)), {"preset": "nafnet"}
    return build_model("dgno", preset_config(cfg.preset, **cfg.model)), {"preset": cfg.preset}


class Trainer:
    def __init__(self, config: TrainConfig, source=None, callbacks: Callbacks | None = None):
        from .sources import build_source  # data sources pull in the simulator; import lazily

        self.cfg = config
        self.callbacks = callbacks or Callbacks()
        self.source = source if source is not None else build_source(config.data, config.patch, config.seed)
        self.device = resolve_device(config.device)
        self.run_dir = config.run_dir
        self.history: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.callbacks.on_log:
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
        for blurred, sharp in self.val_pairs:
            x = torch.from_numpy(blurred)[None, None].to(self.device)
            with autocast_context(self.device, self.cfg.amp):
                y = model(x)
            pairs.append((y.float().cpu().numpy()[0, 0], sharp))
        model.train()
        return mean_metrics(pairs)

    # -- the run -------------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> Path:
        """Train to ``cfg.steps`` (or until stopped); returns the exported checkpoint's stem."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        model, extra = build_network(cfg)
        model.to(self.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        ema = EMA(model, cfg.ema_decay)
        self.val_pairs = self.source.validation_pairs(cfg.val_size, cfg.val_patch, cfg.seed + 10_000)
        start, seconds = 0, 0.0
        if resume:
            start, seconds = self._resume(model, optimizer, scheduler, ema, rng)
        if start == 0:
            self.history = [{"step": 0, "val": {}, "input": mean_metrics(self.val_pairs)}]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter() - seconds
        step = start
        self._log(f"{cfg.name}: steps {start}..{cfg.steps}, {count_parameters(model):,} parameters")
        while step < cfg.steps:
            if self.callbacks.should_stop and self.callbacks.should_stop():
                self._log(f"stopped at step {step}")
                break
            blurred, sharp = self.source.make_batch(cfg.batch_size, rng)
            blurred, sharp = blurred.to(self.device), sharp.to(self.device)
            with autocast_context(self.device, cfg.amp):
                outputs = model.forward_multiscale(blurred)
            loss = multiscale_l1_fft(outputs, sharp, cfg.fft_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update(model, step)
            step += 1
            if self.callbacks.on_step:
                info = StepInfo(
                    step,
                    cfg.steps,
                    float(loss.detach()),
                    scheduler.get_last_lr()[0],
                    time.perf_counter() - t0,
                )
                self.callbacks.on_step(info)
            if step % cfg.val_every == 0 or step == cfg.steps:
                self._validate_with_ema(model, ema, step)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                self._save_state(model, optimizer, scheduler, ema, rng, step, time.perf_counter() - t0, extra)
        if step % cfg.checkpoint_every and step != cfg.steps and step > start:
            self._save_state(model, optimizer, scheduler, ema, rng, step, time.perf_counter() - t0, extra)
        return self.export(model, ema, step, time.perf_counter() - t0, extra)

    def _validate_with_ema(self, model, ema, step: int) -> None:
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
        metrics = self.validate(model)
        model.load_state_dict(live)
        self.history.append({"step": step, "val": metrics})
        self._log(f"step {step}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}")
        if self.callbacks.on_validation:
            self.callbacks.on_validation(step, metrics)

    def _save_state(self, model, optimizer, scheduler, ema, rng, step, seconds, extra) -> None:
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
        for step, stem in ckpt.checkpoints(self.run_dir):
            try:
                saved, meta = load_checkpoint(stem)
                tensors = ckpt.load_state_tensors(stem)
            except CheckpointError as exc:
                self._log(f"skipping damaged checkpoint {stem.name}: {exc}")
                continue
            model.load_state_dict(saved.state_dict())
            resume = meta["resume"]
            ckpt.restore_optimizer(optimizer, tensors["optim"], resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            ckpt.restore_rng(rng, tensors["rng"], resume["rng"])
            ema.shadow = {k: v.to(self.device) for k, v in tensors["ema"].items()}
            self.history = meta["training"]["history"]
            self._log(f"resumed from {stem.name}")
            return step, float(resume["seconds"])
        return 0, 0.0

    def export(self, model, ema, step: int, seconds: float, extra: dict) -> Path:
        """Write the EMA weights as the run's model: ``runs/NAME/NAME.safetensors`` + JSON."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
        stem = self.run_dir / self.cfg.name
        save_checkpoint(stem, model, self._meta(model, step, seconds, extra))
        model.load_state_dict(live)
        return stem
