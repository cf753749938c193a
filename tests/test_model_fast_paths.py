"""The fast paths of the network equal their obvious reference versions, and stay bounded in space.

Why: the speed work (issue 9) rewrote the scan, the element attention and the pooling for memory
layout; these tests pin that the arithmetic is unchanged, to float32 rounding, and that a pixel's
result depends only on a bounded, grid-aligned neighbourhood (what makes tiling exact).
"""

import pytest
import torch

from napari_dgno.model import build_model, preset_config
from napari_dgno.model.blocks import NAFBlock, Pointwise, Upsample, local_mean
from napari_dgno.model.complexity import count_gmacs, preset_cost
from napari_dgno.model.dg import ElementAttention, element_attention_reference
from napari_dgno.model.encoder import SelectiveScan2d

torch.manual_seed(0)


@pytest.mark.parametrize("batch,channels_last", [(1, True), (1, False), (3, True)])
def test_pointwise_equals_a_1x1_convolution_in_value_and_gradient(batch, channels_last):
    conv = torch.nn.Conv2d(6, 10, 1)
    fast = Pointwise(6, 10)
    fast.load_state_dict(conv.state_dict())  # the same parameters: old checkpoints load as they were
    x = torch.randn(batch, 6, 20, 28)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # where PyTorch's own choice is its im2col path
    try:
        got, want = fast(x), conv(x)
        grad_out = torch.randn_like(want)
        got_grads = torch.autograd.grad(got, [x, fast.weight, fast.bias], grad_out)
        want_grads = torch.autograd.grad(want, [x, conv.weight, conv.bias], grad_out)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_macs_counted_on_the_cpu_equal_the_shapes_only_count():
    # The CPU path calls oneDNN's convolution directly; the counter must still see it.
    _, meta_gmacs = preset_cost("small", "face", 128)
    model = build_model("dgno", preset_config("small", flux="face"))
    assert count_gmacs(model, 128) == pytest.approx(meta_gmacs)


# 4- and 8-channel heads take whole-channel products, 16-channel ones per-head products
# (PER_HEAD_MIN_DIM); with 4-px elements (16 tokens) 32 channels take the unfolded paths.
HEAD_LAYOUTS = [(16, 4), (32, 4), (32, 2)]


@pytest.mark.parametrize("flux", ["face", "p0dg", "none"])
@pytest.mark.parametrize("element_size,level", [(16, 0), (16, 1), (8, 0), (4, 0), (0, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "channels,heads", HEAD_LAYOUTS, ids=["4-channel-heads", "8-channel-heads", "16-channel-heads"]
)
def test_element_attention_equals_the_reference(flux, element_size, level, channels_last, channels, heads):
    attn = ElementAttention(channels, heads, flux, "jump", 0.3)
    with torch.no_grad():  # non-trivial norms, so a mix-up of heads or channels would show
        for norm in (attn.k_norm, attn.v_norm):
            norm.weight.normal_(1, 0.3)
            norm.bias.normal_(0, 0.3)
    x = torch.randn(2, channels, 32, 48)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast = attn(x, element_size, level)
    slow = element_attention_reference(attn, x, element_size, level)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    # The residual form puts the result back in x's layout in the same pass as the sum.
    with_x = attn(x, element_size, level, residual=True)
    torch.testing.assert_close(with_x, x + slow, rtol=1e-4, atol=1e-5)
    if channels_last:
        assert with_x.is_contiguous(memory_format=torch.channels_last)


# Elements of 64 tokens fold q and proj into one matrix per element (64 >= C); 16 tokens with 32
# channels do not: both paths, in value and gradient.
@pytest.mark.parametrize("element_size", [8, 4], ids=["folded", "not-folded"])
@pytest.mark.parametrize(
    "channels,heads",
    [(8, 2), (32, 4), (32, 2)],
    ids=["4-channel-heads", "8-channel-heads", "16-channel-heads"],
)
def test_element_attention_gradients_equal_the_reference(channels, heads, element_size):
    attn = ElementAttention(channels, heads, "face", "central", 0.4).double()
    x = torch.randn(1, channels, 16, 16, dtype=torch.float64, requires_grad=True)
    fast = torch.autograd.grad(attn(x, element_size, 0).pow(2).sum(), [x, *attn.parameters()])
    slow = torch.autograd.grad(
        element_attention_reference(attn, x, element_size, 0).pow(2).sum(), [x, *attn.parameters()]
    )
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s)


def test_local_mean_is_the_clipped_box_mean():
    x = torch.randn(2, 3, 13, 9, dtype=torch.float64)
    size = 5
    expected = torch.empty_like(x)
    for i in range(13):
        for j in range(9):
            box = x[..., max(0, i - 2) : i + 3, max(0, j - 2) : j + 3]
            expected[..., i, j] = box.mean(dim=(-2, -1))
    torch.testing.assert_close(local_mean(x, size), expected)


def _change_far_from(x: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    y = x.clone()
    y[..., rows, cols] += torch.randn_like(y[..., rows, cols])
    return y


def test_windowed_scan_sees_only_its_window():
    """Tokens are sorted and scanned inside 8-token windows: changing the inside of one window (away
    from the 3x3 convolution's reach) leaves every other window's output unchanged."""
    scan = SelectiveScan2d(8, d_state=4, window=8, level=0, score_gate=True).eval()
    x = torch.randn(1, 8, 16, 24)
    y = _change_far_from(x, slice(2, 6), slice(2, 6))  # inside window (0, 0)
    with torch.no_grad():
        a, b = scan(x), scan(y)
    assert not torch.allclose(a[..., :8, :8], b[..., :8, :8])
    torch.testing.assert_close(a[..., 8:, :], b[..., 8:, :])
    torch.testing.assert_close(a[..., :, 9:], b[..., :, 9:])


def test_one_window_over_the_image_is_the_global_scan():
    windowed = SelectiveScan2d(8, d_state=4, window=16, level=0).eval()
    whole = SelectiveScan2d(8, d_state=4, window=0, level=0).eval()
    whole.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x), whole(x))


@pytest.mark.parametrize("gate", [True, False])
def test_the_sort_score_learns_only_through_its_gate(gate):
    scan = SelectiveScan2d(8, d_state=4, window=8, score_gate=gate)
    scan(torch.randn(1, 8, 16, 16)).pow(2).sum().backward()
    grad = scan.score.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == gate


def test_local_channel_attention_is_bounded():
    block = NAFBlock(8, pool=16).eval()
    with torch.no_grad():
        block.beta.fill_(1.0)
        block.gamma.fill_(1.0)
    x = torch.randn(1, 8, 64, 64)
    y = _change_far_from(x, slice(0, 8), slice(0, 8))
    with torch.no_grad():
        a, b = block(x), block(y)
    # The coarse 2-px cells, a 8-cell box and bilinear interpolation reach < 32 px.
    torch.testing.assert_close(a[..., 40:, 40:], b[..., 40:, 40:])


def test_bilinear_upsampling_has_no_subpixel_phases():
    """A constant field stays constant: no 2-px pattern from per-phase weights."""
    up = Upsample(8, "bilinear")
    out = up(torch.ones(1, 8, 6, 6) * torch.randn(1, 8, 1, 1))
    assert out.shape == (1, 4, 12, 12)
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))


def test_small_preset_gives_the_same_result_whole_and_in_grid_aligned_pieces():
    """Whole image vs. two halves cut on the 64-px grid, each padded by 64 px of real context: the
    inner parts agree closely (the bounded reach decays well inside one window)."""
    net = build_model("dgno", preset_config("small")).eval()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad():
        whole = net(x)
        left = net(x[..., :, :192])[..., :, :128]
        right = net(x[..., :, 64:])[..., :, 64:]
    span = float(whole.max() - whole.min())
    assert float((left - whole[..., :, :128]).abs().max()) < 0.01 * span
    assert float((right - whole[..., :, 128:]).abs().max()) < 0.01 * span


@pytest.mark.parametrize("architecture", ["dgno", "nafnet"])
def test_a_one_channel_image_runs_channels_last_through_the_networks(architecture):
    """A 1-channel image is both layouts at once; with channels-first weights the first convolution
    switched the whole network to channels-first (20-30 % slower, every norm paying a copy)."""
    from napari_dgno import load_model
    from napari_dgno.model.config import NAFNetConfig

    if architecture == "dgno":
        net = load_model("dgno-small-face", device="cpu").net  # shipped weights, via load_state_dict
    else:
        net = build_model("nafnet", NAFNetConfig())
    layouts = []
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 1]
    for conv in convs:
        conv.register_forward_hook(
            lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last))
        )
    with torch.inference_mode():
        net(torch.rand(1, 1, 128, 128))
    assert layouts and all(layouts)
