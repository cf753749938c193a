"""Invariants of the DGNO network that the method relies on (paper.md, issue 2)."""

import multiprocessing
import os

import pytest
import torch

from napari_dgno.model import DGNOConfig, build_model, count_parameters, preset_config, scan
from napari_dgno.model.dg import ElementAttention, flux_field, galerkin_operator
from napari_dgno.model.elements import to_elements
from napari_dgno.model.scan import selective_scan, selective_scan_reference

torch.manual_seed(0)


def _scan_inputs(b=2, d=5, n=4, length=37):
    g = torch.Generator().manual_seed(1)
    u = torch.randn(b, d, length, generator=g, dtype=torch.float64)
    delta = torch.randn(b, d, length, generator=g, dtype=torch.float64)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 2
    B = torch.randn(b, n, length, generator=g, dtype=torch.float64)
    C = torch.randn(b, n, length, generator=g, dtype=torch.float64)
    D = torch.randn(d, generator=g, dtype=torch.float64)
    bias = torch.randn(d, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D, bias)]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu", "large-kernels-gpu"])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 37])
def test_fast_scan_matches_the_per_step_loop_in_outputs_and_gradients(length, fused):
    inputs = _scan_inputs(length=length)
    fast = selective_scan(*inputs[:6], delta_bias=inputs[6], fused=fused)
    grads_fast = torch.autograd.grad(fast.pow(2).sum(), inputs, materialize_grads=True)
    slow = selective_scan_reference(*inputs[:6], delta_bias=inputs[6])
    grads_slow = torch.autograd.grad(slow.pow(2).sum(), inputs, materialize_grads=True)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # inference keeps two states, not L
        torch.testing.assert_close(
            selective_scan(*inputs[:6], delta_bias=inputs[6], fused=fused), slow.detach()
        )
    for gf, gs in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(gf, gs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["inference", "no_grad", "training"])
def test_the_scan_split_over_threads_equals_the_reference_and_restores_the_thread_count(mode):
    """The CPU scan runs windows on several threads (``MIN_WINDOWS_PER_THREAD`` each), forwards
    and backwards: the same recurrence, so the same answer and gradients, whatever the thread
    count; the caller's thread count comes back."""
    inputs = _scan_inputs(b=3 * scan.MIN_WINDOWS_PER_THREAD + 3, length=19)
    want = selective_scan_reference(*inputs[:6], delta_bias=inputs[6])
    want_grads = torch.autograd.grad(want.pow(2).sum(), inputs)
    before = torch.get_num_threads()
    scan._forget_pool()  # so that the pool seen below is this call's
    torch.set_num_threads(3)  # three shares of 17 windows, whatever the machine's cores
    try:
        context = {"inference": torch.inference_mode, "no_grad": torch.no_grad}.get(mode, torch.enable_grad)
        with context():
            got = selective_scan(*inputs[:6], delta_bias=inputs[6], fused=True)
            grads = torch.autograd.grad(got.pow(2).sum(), inputs) if mode == "training" else want_grads
        assert torch.get_num_threads() == 3
        assert scan._POOL_WORKERS == 2  # it was split: two helpers beside the calling thread
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-10)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def _scan_in_forked_child(inputs, queue):
    torch.set_num_threads(2)
    with torch.no_grad():
        queue.put(selective_scan(*inputs[:6], delta_bias=inputs[6], fused=True).sum().item())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_scans_with_its_own_threads():
    """A child forked after the parent's scan has no pool threads: it must start its own, not wait
    forever on the parent's (as a data-loader or batch worker forked from a busy process would)."""
    inputs = [t.detach() for t in _scan_inputs(b=2 * scan.MIN_WINDOWS_PER_THREAD + 3, length=5)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            want = selective_scan(*inputs[:6], delta_bias=inputs[6], fused=True).sum().item()
        assert scan._POOL_WORKERS >= 1  # the parent has a pool now
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_scan_in_forked_child, args=(inputs, queue))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung in the scan")
        assert child.exitcode == 0
        assert queue.get(timeout=5) == pytest.approx(want, rel=1e-12)
    finally:
        torch.set_num_threads(before)


def _attention(flux="face", mode="jump", channels=8, heads=2, tau=0.25):
    return ElementAttention(channels, heads, flux, mode, tau).double()


def test_one_element_is_global_galerkin_attention():
    attn = _attention(flux="face")
    x = torch.randn(2, 8, 12, 16, dtype=torch.float64)
    out = attn(x, element_size=0, level=0)
    # Global Galerkin attention written out directly (SRNO's layer): q (LN(k)^T LN(v)) / N.
    q, k, v = attn.qkv(x).reshape(2, 3, 2, 4, 12 * 16).unbind(1)
    q, k, v = (t.transpose(-1, -2) for t in (q, k, v))
    k, v = attn.k_norm(k), attn.v_norm(v)
    y = q @ (k.transpose(-1, -2) @ v) / (12 * 16)
    expected = attn.proj(y.transpose(-1, -2).reshape(2, 8, 12, 16))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("flux", ["face", "p0dg"])
@pytest.mark.parametrize("mode", ["jump", "central"])
def test_flux_sums_to_zero_over_the_domain(flux, mode):
    attn = _attention(flux=flux, mode=mode)
    x = torch.randn(1, 8, 32, 24, dtype=torch.float64)
    _, volume, flux_term, _ = attn.operators(x, element_size=8, level=0)
    assert flux_term.abs().sum() > 0
    total = flux_term.sum(dim=(2, 3))  # over all elements
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-12, rtol=0)


def test_jump_flux_is_minus_tau_laplacian_on_interior_elements():
    tau = torch.tensor(0.3, dtype=torch.float64)
    field = torch.randn(2, 3, 5, 6, 4, 4, dtype=torch.float64)  # (B, heads, nh, nw, d, d)
    flux = flux_field(field, None, tau, "jump")
    lap = (
        field[:, :, :-2, 1:-1]
        + field[:, :, 2:, 1:-1]
        + field[:, :, 1:-1, :-2]
        + field[:, :, 1:-1, 2:]
        - 4 * field[:, :, 1:-1, 1:-1]
    )
    torch.testing.assert_close(flux[:, :, 1:-1, 1:-1], -tau * lap)
    # Neumann border: a corner element only sees its two neighbours.
    corner = -tau * (field[:, :, 1, 0] + field[:, :, 0, 1] - 2 * field[:, :, 0, 0])
    torch.testing.assert_close(flux[:, :, 0, 0], corner)


def test_central_flux_is_a_central_difference():
    tau = torch.tensor(0.5, dtype=torch.float64)
    field = torch.randn(1, 1, 1, 7, 3, 3, dtype=torch.float64)  # one row of elements
    flux = flux_field(field, None, tau, "central")
    diff = tau * (field[:, :, :, 2:] - field[:, :, :, :-2]) / 2
    torch.testing.assert_close(flux[:, :, :, 1:-1], diff)


def test_face_flux_uses_boundary_tokens_only():
    attn = _attention(flux="face")
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64)
    _, _, flux_a, _ = attn.operators(x, 8, 0)
    y = x.clone()
    y[..., 3:5, 3:5] += 1.0  # inside element (0, 0), away from its boundary lines
    _, _, flux_b, _ = attn.operators(y, 8, 0)
    torch.testing.assert_close(flux_a, flux_b)


@pytest.mark.parametrize("flux,reaches", [("none", False), ("p0dg", True), ("face", True)])
def test_input_change_reaches_other_elements_only_through_the_flux(flux, reaches):
    attn = _attention(flux=flux)
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64)
    y = x.clone()
    y[..., 0:8, 0:8] += torch.randn(1, 8, 8, 8, dtype=torch.float64)  # all of element (0, 0)
    out_x, out_y = attn(x, 8, 0), attn(y, 8, 0)
    changed_elsewhere = not torch.allclose(out_x[..., 8:, :], out_y[..., 8:, :])
    assert changed_elsewhere == reaches
    assert not torch.allclose(out_x[..., :8, :8], out_y[..., :8, :8])


def test_volume_operator_is_per_element():
    attn = _attention(flux="none")
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64)
    _, volume, _, _ = attn.operators(x, 8, 0)
    assert volume.shape == (1, 2, 2, 2, 4, 4)
    k = attn.k_norm(to_elements(attn.qkv(x)[:, 8:16].reshape(1, 2, 4, 16, 16), 8, 8))
    v = attn.v_norm(to_elements(attn.qkv(x)[:, 16:].reshape(1, 2, 4, 16, 16), 8, 8))
    torch.testing.assert_close(volume, galerkin_operator(k, v))


@pytest.mark.parametrize("shape", [(37, 50), (64, 64), (9, 130)])
def test_network_restores_any_size(shape):
    net = build_model("dgno", preset_config("tiny")).eval()
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        y = net(x)
        y16 = net(x, element_size=16, flux="p0dg")
        y0 = net(x, element_size=0, flux="none")
    assert y.shape == y16.shape == y0.shape == x.shape
    assert torch.isfinite(y).all()


def test_element_size_must_fit_the_levels():
    net = build_model("dgno", preset_config("tiny"))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.rand(1, 1, 32, 32), element_size=6)
    with pytest.raises(ValueError, match="flux"):
        preset_config("tiny", flux="upwind")


def test_config_round_trip_and_presets():
    cfg = preset_config("small", element_size=32, flux="p0dg")
    assert DGNOConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DGNO config keys"):
        DGNOConfig.from_dict({**cfg.to_dict(), "colour": 1})
    assert count_parameters(build_model("dgno", preset_config("small"))) < 2_000_000
    assert 12e6 < count_parameters(build_model("dgno", preset_config("paper"))) < 16e6


def test_multiscale_outputs_are_coarse_to_fine():
    net = build_model("dgno", preset_config("tiny"))
    outs = net.forward_multiscale(torch.rand(1, 1, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 32, 64]
