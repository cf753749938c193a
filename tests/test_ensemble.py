"""The x8 geometric self-ensemble: the dihedral average itself, and ``deblur(self_ensemble=True)``."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import Identity, smooth
from napari_dgno.errors import Cancelled
from napari_dgno.inference import deblur, deblur_to, dihedral_average


def _x(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


def _x_ramp(t):
    """Not equivariant: adds the column index (0, 1, ... along X of whatever it is given)."""
    return t + torch.arange(t.shape[-1], dtype=t.dtype)


# --------------------------------------------------------------------------------------------------
# the average


@pytest.mark.parametrize(
    "predict",
    [
        lambda t: t,  # identity
        lambda t: t * t + 1,  # pointwise
        lambda t: F.avg_pool2d(t, 3, stride=1, padding=1),  # symmetric kernel, zero border
    ],
    ids=["identity", "pointwise", "box-blur"],
)
@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (2, 3, 12, 20)])
def test_equivariant_predict_is_unchanged(predict, shape):
    x = _x(shape)
    before = x.clone()
    out = dihedral_average(predict, x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, predict(x), rtol=1e-6, atol=1e-6)
    assert torch.equal(x, before)  # the input is never written to (identity returns it as is)


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (1, 1, 10, 24), (2, 1, 21, 9)])
def test_x_ramp_averages_to_the_mean_ramp(shape):
    """Mapped back, the 8 X-ramps are j, W-1-j (rotations by 0 / 180°, with and without the
    mirror) and i, H-1-i (the quarter turns), two of each: their mean is (H - 1 + W - 1) / 4."""
    height, width = shape[-2:]
    x = _x(shape, seed=1)
    i = np.arange(height)[:, None] + np.zeros((1, width))
    j = np.zeros((height, 1)) + np.arange(width)[None, :]
    ramps = [j, j, width - 1 - j, width - 1 - j, i, i, height - 1 - i, height - 1 - i]
    expected = x.numpy() + np.mean(ramps, axis=0)
    np.testing.assert_allclose(np.mean(ramps, axis=0), (height + width - 2) / 4)
    out = dihedral_average(_x_ramp, x)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-5)
    assert not np.allclose(out.numpy(), _x_ramp(x).numpy())  # plain output differs


def test_matches_a_numpy_reference_for_an_orientation_dependent_predict():
    """A running sum along X: every orientation gives a different answer; compare with the 8
    outputs transformed back by hand with numpy."""
    x = _x((2, 1, 10, 14), seed=2)
    outs = []
    for k in range(4):
        for flip in (False, True):
            t = np.flip(x.numpy(), -1) if flip else x.numpy()
            y = np.cumsum(np.rot90(t, k, axes=(-2, -1)), axis=-1)
            back = np.rot90(y, -k, axes=(-2, -1))
            outs.append(np.flip(back, -1) if flip else back)
    out = dihedral_average(lambda t: t.cumsum(-1), x)
    np.testing.assert_allclose(out.numpy(), np.mean(outs, axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 8, 24), (1, 2, 13, 7), (3, 1, 9, 32)])
def test_non_square_inputs_keep_their_shape_and_run_sequentially(shape):
    seen = []

    def predict(t):
        seen.append(tuple(t.shape))
        assert t.is_contiguous()
        return (t * 2).to(torch.bfloat16)  # as under GPU autocast

    out = dihedral_average(predict, _x(shape))
    assert out.shape == shape and out.dtype == torch.float32  # accumulated in float32
    n, c, h, w = shape
    assert sorted(seen) == sorted([(n, c, h, w)] * 4 + [(n, c, w, h)] * 4)
    assert seen[0] == (n, c, h, w)


# --------------------------------------------------------------------------------------------------
# in the engine


def test_deblur_with_self_ensemble(tiny):
    image = (np.random.default_rng(3).random((2, 40, 56)) * 4000).astype(np.uint16)
    info = {}
    out = deblur(image, tiny, self_ensemble=True, info=info)
    plain = deblur(image, tiny)
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert info["self_ensemble"] is True
    assert not np.allclose(out, plain, rtol=1e-3, atol=1e-2)  # a random net is not equivariant
    info = {}
    deblur(image, tiny, info=info)
    assert info["self_ensemble"] is False
    streamed = deblur_to(image, np.zeros(image.shape, np.float32), tiny, self_ensemble=True)
    np.testing.assert_allclose(streamed, out, rtol=1e-5, atol=1e-3)


def test_self_ensemble_tiled_matches_single_pass(tiny):
    """The tolerance of ``test_tiled_matches_single_pass`` (tiles see less context): 2 % / 0.2 %."""
    image = smooth((256, 256))
    whole = deblur(image, tiny, self_ensemble=True)
    info = {}
    tiled = deblur(image, tiny, tile=128, overlap=64, self_ensemble=True, info=info)
    assert info["tiles_per_plane"] == 9
    diff = np.abs(tiled - whole) / (whole.max() - whole.min())
    assert diff.max() < 0.02 and diff.mean() < 0.002, (diff.max(), diff.mean())


def test_identity_runs_eight_passes_per_tile_and_gives_back_the_input():
    image = smooth((2, 70, 90))
    net, info, calls = Identity(), {}, []
    out = deblur(
        image, net, tile=48, overlap=16, self_ensemble=True, info=info, progress=lambda d, t: calls.append(d)
    )
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-3)
    tiles = info["tiles_per_plane"] * 2
    assert net.calls == 8 * tiles and calls == list(range(1, tiles + 1))  # progress still per tile
    assert any(h != w for h, w in net.shapes)  # non-square tiles run turned by a quarter too


def test_out_of_memory_retry_with_self_ensemble():
    class Small(Identity):
        def forward(self, x, element_size=None, flux=None):
            if max(x.shape[-2:]) > 80:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    image = smooth((200, 200))
    info = {}
    out = deblur(image, Small(), self_ensemble=True, info=info)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-3)
    assert info["tile"] == 64 and info["self_ensemble"] is True


def test_cancel_is_checked_between_the_passes():
    net = Identity()
    with pytest.raises(Cancelled):
        deblur(smooth((64, 64)), net, self_ensemble=True, cancel=lambda: net.calls >= 3)
    assert net.calls == 3  # stopped inside the first (only) tile, not after all 8 passes
