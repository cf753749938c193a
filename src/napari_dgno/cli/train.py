"""``dgno train``: run a training config from ``configs/`` with a progress bar and a log file.

Ctrl-C (or SIGTERM) stops cleanly within a moment: the step it interrupts is dropped, the last
completed step is saved as a checkpoint, and running the same command again resumes from it.
``--install`` copies the exported model into the user model directory, where the napari widgets and
``dgno deblur --model NAME`` find it.

Several GPUs: ``torchrun --nproc_per_node N -m napari_dgno.cli train --config ...`` trains
data-parallel (``batch_size`` is the global batch, split over the N processes; see
``train/distributed.py``). Rank 0 alone shows progress, writes the log, the checkpoints and the model.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a model from a config file",
        description=(
            "Train (or fine-tune) a model as a YAML config in configs/ describes; resumable. On several "
            "GPUs: torchrun --nproc_per_node N -m napari_dgno.cli train --config FILE"
        ),
    )
    p.add_argument("--config", required=True, type=Path, help="YAML training config (see configs/)")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--name", help="override the run name")
    p.add_argument("--output-dir", help="where run folders go (default: runs/)")
    p.add_argument("--base", metavar="MODEL", help="fine-tune from this model name or checkpoint path")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument(
        "--data-workers",
        type=int,
        metavar="N",
        help="processes that simulate batches ahead (for GPUs; step k's batch then comes from (seed, k))",
    )
    p.add_argument("--no-resume", action="store_true", help="start again even if checkpoints exist")
    p.add_argument("--install", action="store_true", help="copy the result to the user model folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _overrides(args) -> dict:
    out = {}
    for key in ("steps", "name", "output_dir", "device", "threads", "data_workers"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    if args.base:
        from ..registry import locate_model

        out["base_checkpoint"] = str(locate_model(args.base))
    return out


def run(args) -> int:
    from tqdm import tqdm

    from ..errors import InputError
    from ..registry import save_user_model, user_model_dir
    from ..train.config import TrainConfig
    from ..train.distributed import rank_from_env
    from ..train.engine import Callbacks, Trainer

    if not args.config.is_file():
        raise InputError(f"training config {args.config} not found")
    try:
        cfg = TrainConfig.from_yaml(args.config, **_overrides(args))
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad training config {args.config}: {exc}") from exc
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    main_rank = rank_from_env() == 0  # under torchrun, the other ranks train silently
    log_path = cfg.run_dir / "train.log" if main_rank else os.devnull
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
    quiet = args.quiet or not main_rank
    bar = None if quiet else tqdm(total=cfg.steps, unit="step", desc=cfg.name, file=sys.stderr)
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    def on_step(info):
        if bar is not None:
            if bar.initial == 0 and bar.n == 0 and info.step > 1:
                # A resumed run: rate and time left count from here, not from step 0.
                bar.reset(total=cfg.steps)
                bar.initial = bar.last_print_n = info.step - 1
            bar.n = info.step
            bar.set_postfix(loss=f"{info.loss:.4f}", lr=f"{info.lr:.1e}", refresh=False)
            bar.refresh()
        if info.step % 10 == 0:
            log_file.write(
                f"step {info.step}/{info.total} loss {info.loss:.4f} lr {info.lr:.2e} {info.seconds:.0f}s\n"
            )

    def on_log(message):
        log_file.write(message + "\n")
        if bar is not None:
            bar.write(message, file=sys.stderr)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer = Trainer(cfg, callbacks=Callbacks(on_step, None, lambda: stop["requested"], on_log))
        stem = trainer.run(resume=not args.no_resume)
        stopped = stop["requested"] or trainer.stopped
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if bar is not None:
            bar.close()
        log_file.close()
    if not main_rank:
        return 130 if stopped else 0
    what = "model (already up to date) at" if trainer.up_to_date else "model written to"
    print(
        f"dgno: {what} {stem}.safetensors (+ .json); log in {cfg.run_dir / 'train.log'}",
        file=sys.stderr,
    )
    if args.install:
        save_user_model(stem, stem.name, overwrite=True)
        print(f"dgno: installed as model {stem.name!r} in {user_model_dir()}", file=sys.stderr)
    return 130 if stopped else 0
