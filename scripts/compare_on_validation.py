"""Compare checkpoints on a training config's *validation* pairs: mean ± s.e. and paired differences.

Why: which model ships, and which checkpoint of a run, is decided on validation data, never on the
test set that ``dgno bench`` reports. This builds exactly the validation pairs the trainer uses for
``--config`` (same source, size, patch and seed) and scores every model on them the same way.

    python scripts/compare_on_validation.py --config configs/dgno-small-face-v2.yaml \
        dgno-small-face training/dgno-small-face-v2/step-004000.safetensors
"""

import argparse

import numpy as np
import torch

from napari_dgno.metrics import psnr_ssim
from napari_dgno.registry import load_model
from napari_dgno.train.batches import build_source
from napari_dgno.train.config import TrainConfig


def per_image_psnr(net, pairs) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for blurred, sharp in pairs:
            restored = net(torch.from_numpy(blurred)[None, None]).numpy()[0, 0]
            out.append(psnr_ssim(restored, sharp)[0])
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training config whose validation pairs to use")
    p.add_argument("models", nargs="+", help="model names or checkpoint paths; the first is the reference")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_yaml(args.config)
    source = build_source(cfg.data, cfg.patch, cfg.seed)
    pairs = source.validation_pairs(cfg.val_size, cfg.val_patch, cfg.seed + 10_000)
    blurred = np.array([psnr_ssim(b, s)[0] for b, s in pairs])
    n = len(pairs)
    print(f"{n} validation pairs of {args.config}; blurred input {blurred.mean():.2f} dB")
    reference = None
    for name in args.models:
        scores = per_image_psnr(load_model(name, device="cpu").net.eval(), pairs)
        line = f"{name}: {scores.mean():.2f} ± {scores.std(ddof=1) / np.sqrt(n):.2f} dB"
        if reference is None:
            reference = scores
        else:
            diff = scores - reference
            line += f"; minus the first: {diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(n):.3f} dB (paired)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
