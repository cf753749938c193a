"""Fixtures shared by the test files: one torch thread, a tiny network, user models, notifications."""

import os
import time

import numpy as np
import pytest
import torch
from hypothesis import settings
from scipy.ndimage import gaussian_filter

from napari_dgno.io.checkpoint import save_checkpoint
from napari_dgno.model import build_model, preset_config
from napari_dgno.options import DeblurOptions

# CI replays the same examples every run (a red run blocks a landing); locally hypothesis explores.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a busy 2-core machine, 2 OpenMP threads spin against each other (measured 50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread_env(monkeypatch):
    """Runs that read NAPARI_DGNO_THREADS (the CLI, batch workers) use one thread too."""
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init tiny DGNO saved as a checkpoint file; the path of its JSON."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder / "tiny", build_model("dgno", preset_config("tiny")), {"preset": "tiny"})
    return folder / "tiny.json"


@pytest.fixture(scope="module")
def tiny():
    """A random-init tiny DGNO network (milliseconds per image)."""
    torch.manual_seed(0)
    return build_model("dgno", preset_config("tiny")).eval()


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """The tiny DGNO saved as the *user* model "tiny-test" (found by list_models via the env var)."""
    folder = tmp_path / "models"
    torch.manual_seed(0)
    net = build_model("dgno", preset_config("tiny"))
    save_checkpoint(folder / "tiny-test", net, meta={"name": "tiny-test", "preset": "tiny"})
    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(folder))
    monkeypatch.delenv("NAPARI_DGNO_RUNS_DIR", raising=False)  # runs go beside the model folder
    return "tiny-test"


@pytest.fixture
def no_shipped_models(tmp_path, monkeypatch):
    """Hide the shipped weights, so only the test's own models are listed."""
    from napari_dgno import registry

    empty = tmp_path / "no-shipped"
    empty.mkdir()
    monkeypatch.setattr(registry, "shipped_model_dir", lambda: empty)


@pytest.fixture
def notifications(monkeypatch):
    """Messages shown with napari's show_* helpers (what the user sees instead of a traceback)."""
    from napari.utils import notifications as nt

    seen = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(nt, f"show_{level}", lambda msg, _lvl=level: seen.append((_lvl, msg)))
    return seen


class Identity(torch.nn.Module):
    """Returns its input: deblur must then give back the input exactly, in the input's units."""

    def __init__(self, multiple=8):
        super().__init__()
        self.multiple, self.calls, self.shapes = multiple, 0, []

    def pad_multiple(self, element_size=None):
        return self.multiple

    def forward(self, x, element_size=None, flux=None):
        self.calls += 1
        self.shapes.append(tuple(x.shape[-2:]))
        return x


def smooth(shape, sigma=6, seed=0, scale=1000.0):
    """A smooth test image in [0, scale]."""
    img = gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return ((img - img.min()) / (img.max() - img.min()) * scale).astype(np.float32)


@pytest.fixture
def deblur_calls(monkeypatch):
    """The options of every engine run (``restore`` / ``restore_to``, which still run), in order, as
    dicts: what the CLI, the docks and batch runs asked the engine for."""
    from napari_dgno.inference import engine

    calls = []
    for name in ("restore", "restore_to"):
        real = getattr(engine, name)

        def spy(*args, _real=real, **kwargs):
            options = next(a for a in (*args, *kwargs.values()) if isinstance(a, DeblurOptions))
            calls.append(options.to_dict())
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, name, spy)
    return calls


class _SleepInBackward(torch.autograd.Function):
    """Identity whose backward sleeps: gradient passes (the kernel overlay's) take time too."""

    @staticmethod
    def forward(ctx, y, seconds):
        ctx.seconds = seconds
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        time.sleep(ctx.seconds)
        return grad, None


class SlowNet(torch.nn.Module):
    """A tiny DGNO that sleeps in each forward and each backward pass: a run surely still going when
    Cancel is pressed. (With fast backward passes, the kernel overlay could finish its gradients and
    its fit before the GUI thread had handled the first progress signal, and the Cancel came late.)"""

    def __init__(self, seconds: float):
        super().__init__()
        torch.manual_seed(0)
        self.net = build_model("dgno", preset_config("tiny"))
        self.config, self.seconds = self.net.config, seconds

    def pad_multiple(self, element_size=None):
        return self.net.pad_multiple(element_size)

    def forward(self, x, element_size=None, flux=None):
        time.sleep(self.seconds)
        y = self.net(x, element_size, flux)
        return _SleepInBackward.apply(y, self.seconds) if y.requires_grad else y


@pytest.fixture
def slow_net():
    """``slow_net(seconds)``: a tiny network that takes at least ``seconds`` per forward and backward."""
    return SlowNet
