"""The one place that decides devices, precision and CPU threads.

The CLI, the Python API and the widgets all pass the user's device string through
:func:`resolve_device`, so "auto", "cuda:1" or a typo mean the same thing (and fail the same way)
everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from .errors import InputError
from .memory import keep_freed_memory

THREADS_ENV = "NAPARI_DGNO_THREADS"
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")

# Everything that runs a network imports this module: large tensors reuse freed memory from here on.
keep_freed_memory()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (first GPU, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
    ``torch.device`` -> a device that exists here; an :class:`InputError` otherwise."""
    if isinstance(device, torch.device):
        spec = str(device)
    elif device is None:
        spec = "auto"
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise InputError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise InputError("device 'mps' is not available on this machine; use 'cpu'")
        return torch.device("mps")
    match = _CUDA_RE.match(spec)
    if not match:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = "without CUDA" if torch.version.cuda is None else "with CUDA, but no GPU is visible"
        raise InputError(f"device {spec!r} is not available (torch {torch.__version__} {build}); use 'cpu'")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(f"device {spec!r} does not exist: this machine has {count} GPU(s) (cuda:0..)")
    return torch.device(f"cuda:{index}")


def available_devices() -> list[tuple[str, str]]:
    """``[(id, description)]`` for a device picker: CPU first, then every GPU with its memory."""
    devices = [("cpu", f"cpu ({torch.get_num_threads()} threads)")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append((f"cuda:{i}", f"cuda:{i} ({props.name}, {props.total_memory / 1e9:.0f} GB)"))
    if _mps_available():
        devices.append(("mps", "mps (Apple GPU)"))
    return devices


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on GPUs that support it (no overflow in the attention sums), else float16; None
    (full float32) on CPU. Why not bfloat16 there: on CPUs with AVX512-BF16 it is 1.45x faster (768²,
    2 cores) but moves the shipped model's output by up to 2 % of its range (rms 0.2 %), and whether
    a CPU has it would then change the answer from one machine to the next."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device, enabled: bool = True):
    """Mixed-precision autocast on CUDA; a no-op context on CPU (or when ``enabled`` is False)."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def default_threads() -> int:
    """Threads for CPU work: ``$NAPARI_DGNO_THREADS`` if set, else torch's own setting (which
    follows ``OMP_NUM_THREADS``)."""
    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise InputError(f"{THREADS_ENV} must be a whole number, got {value!r}") from None
    return torch.get_num_threads()


@contextlib.contextmanager
def cpu_threads(n: int | None = None):
    """Run the block with ``n`` torch CPU threads (default: :func:`default_threads`), then restore."""
    before = torch.get_num_threads()
    wanted = default_threads() if n is None else int(n)
    if wanted < 1:
        raise InputError(f"thread count must be at least 1, got {n}")
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
