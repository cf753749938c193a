"""Run one training config with a progress log (used before `dgno train` existed; same engine)."""

import sys
import time

import yaml

from napari_dgno.train.config import TrainConfig
from napari_dgno.train.engine import Callbacks, Trainer

# key=value overrides, values parsed as YAML: threads=1 steps=100 name=probe
overrides = {k: yaml.safe_load(v) for k, v in (arg.split("=", 1) for arg in sys.argv[2:])}
cfg = TrainConfig.from_yaml(sys.argv[1], **overrides)
t0 = time.time()


def on_step(info):
    if info.step % 10 == 0:
        print(
            f"step {info.step}/{info.total} loss {info.loss:.4f} lr {info.lr:.2e} {info.seconds:.0f}s",
            flush=True,
        )


print(
    Trainer(cfg, callbacks=Callbacks(on_step=on_step, on_log=lambda m: print(m, flush=True))).run(),
    flush=True,
)
