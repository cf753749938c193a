"""Check the CUDA path on a GPU machine: device choice, bf16 autocast, OOM fallback, speed.

Run there with PYTHONPATH=src. Prints one line per check; exits non-zero if a check fails.
"""

import time

import numpy as np
import tifffile
import torch

from napari_dgno import deblur, load_model
from napari_dgno.devices import available_devices, resolve_device
from napari_dgno.metrics import psnr_ssim
from napari_dgno.samples import BLURRED, SAMPLE_DIR, SHARP

print("devices:", available_devices())
assert resolve_device("auto").type == "cuda", "auto did not pick CUDA"
# (read directly: the sample's depth map needs imagecodecs, which the GPU image lacks)
blurred = tifffile.imread(SAMPLE_DIR / BLURRED)
sharp = tifffile.imread(SAMPLE_DIR / SHARP).astype(np.float32)
cpu = deblur(blurred, load_model(device="cpu"), device="cpu")
gpu_model = load_model(device="cuda")
gpu = deblur(blurred, gpu_model, device="cuda")  # bf16 autocast
fp32 = deblur(blurred, gpu_model, device="cuda", mixed_precision=False)
rng = float(sharp.max() - sharp.min())
print(
    f"max |cuda fp32 - cpu| = {np.abs(fp32 - cpu).max() / rng:.2e} of range; "
    f"bf16 vs cpu {np.abs(gpu - cpu).max() / rng:.2e}"
)
p_cpu, p_bf16, p_fp32 = (psnr_ssim(x, sharp)[0] for x in (cpu, gpu, fp32))
print(f"PSNR cpu {p_cpu:.2f}  cuda-bf16 {p_bf16:.2f}  cuda-fp32 {p_fp32:.2f}")
big = np.tile(blurred, (16, 16))[:4096, :4096]  # 4096 x 4096
torch.cuda.synchronize()
t = time.perf_counter()
deblur(big, gpu_model, device="cuda")
torch.cuda.synchronize()
print(f"4096^2 on cuda (bf16): {time.perf_counter() - t:.2f} s")
# Out-of-memory fallback: leave the network only a sliver of the card, ask for one huge tile.
free, _ = torch.cuda.mem_get_info()
hog = torch.empty(int(free - 1.5e9), dtype=torch.uint8, device="cuda")
info = {}
out = deblur(big, gpu_model, device="cuda", tile=4096, overlap=64, info=info)
del hog
print("OOM fallback: tile used", info.get("tile"), "| finite:", bool(np.isfinite(out).all()))

# Which scan path a GPU wants: whole tensors and one launch per step (the default there) or the
# CPU's fused, cache-sized steps (model/scan.py). A training-sized bottleneck scan, forward + backward.
from napari_dgno.model.scan import selective_scan_tokens  # noqa: E402

L, N, d, n = 64, 64, 128, 8
args = [torch.randn(L, N, d, device="cuda"), torch.rand(L, N, d, device="cuda") * 0.1]
args += [-torch.rand(d, n, device="cuda"), torch.randn(L, N, n, device="cuda")]
args += [torch.randn(L, N, n, device="cuda")]
for t in args:
    t.requires_grad_()
for fused in (False, True):
    for i in range(6):
        if i == 1:
            torch.cuda.synchronize()
            t = time.perf_counter()
        selective_scan_tokens(*args, fused=fused).sum().backward()
    torch.cuda.synchronize()
    print(f"scan fwd+bwd on cuda, fused={fused}: {(time.perf_counter() - t) / 5 * 1e3:.1f} ms")
