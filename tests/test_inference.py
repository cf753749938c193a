"""The deblur engine: devices, element-aligned tiling and blending, nD/dask input, and input rules."""

import json

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import Identity, smooth
from napari_dgno import registry
from napari_dgno.errors import Cancelled, CheckpointError, DGNOError, InputError
from napari_dgno.inference import (
    autocast_context,
    available_devices,
    cpu_threads,
    deblur,
    list_models,
    load_model,
    plan_tiles,
    resolve_device,
    tile_weight,
)
from napari_dgno.io import save_checkpoint
from napari_dgno.model import NAFNetConfig, build_model
from napari_dgno.tiling import Blender, auto_overlap, auto_tile, halve_tile


class TileMean(Identity):
    """Adds the tile's own mean: maximally context-dependent, so hard tile borders would step."""

    def forward(self, x, element_size=None, flux=None):
        return x + 5 * x.mean()


# --------------------------------------------------------------------------------------------------
# devices


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    for bad in ("gpu", "cuda:x", "tpu", 3):
        with pytest.raises(InputError) as err:
            resolve_device(bad)
        assert "\n" not in str(err.value)
    if not torch.cuda.is_available():
        for spec in ("cuda", "cuda:0", "CUDA:1"):
            with pytest.raises(InputError, match="not available"):
                resolve_device(spec)
    else:  # pragma: no cover - GPU machines
        with pytest.raises(InputError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_available_devices_and_contexts():
    devices = available_devices()
    assert devices[0][0] == "cpu" and "threads" in devices[0][1]
    assert all(isinstance(i, str) and isinstance(d, str) for i, d in devices)
    with autocast_context(torch.device("cpu")):
        assert not torch.is_autocast_enabled()
    before = torch.get_num_threads()
    with cpu_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_threads_from_environment(monkeypatch):
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "2")
    with cpu_threads():
        assert torch.get_num_threads() == 2
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "many")
    with pytest.raises(InputError):
        with cpu_threads():
            pass


# --------------------------------------------------------------------------------------------------
# tiling


@settings(max_examples=150, deadline=None)
@example(height=8, width=25, tile=16, overlap_frac=0.5, multiple=8)  # starts once collided on the grid
@given(
    height=st.integers(8, 700),
    width=st.integers(8, 700),
    tile=st.integers(16, 300),
    overlap_frac=st.floats(0, 0.5),
    multiple=st.sampled_from([1, 8, 16, 32]),
)
def test_plan_tiles_properties(height, width, tile, overlap_frac, multiple):
    tile = -(-tile // multiple) * multiple
    overlap = int(tile * overlap_frac) // multiple * multiple
    if overlap >= tile:
        overlap = 0
    tiles = plan_tiles((height, width), tile, overlap, multiple)
    weight = np.zeros((height, width))
    for t in tiles:
        assert t.y0 % multiple == 0 and t.x0 % multiple == 0  # on the element grid
        assert 0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width
        assert max(t.shape) < max(tile, 1) + multiple
        w = tile_weight(t)
        assert w.shape == t.shape and (w > 0).all() and (w <= 1).all()
        weight[t.slices] += w
    assert (weight > 0).all()  # full coverage
    for axis in (0, 1):  # neighbours overlap by at least the requested overlap
        spans = sorted({(t.y0, t.y1) if axis == 0 else (t.x0, t.x1) for t in tiles})
        for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False):
            assert a1 - b0 >= overlap
    # where at most two tiles overlap, the feathered weights sum to exactly one
    if overlap * 2 <= tile:
        ys = {(t.y0, t.y1) for t in tiles}
        xs = {(t.x0, t.x1) for t in tiles}
        if max(_depth(ys, height), _depth(xs, width)) <= 2:
            np.testing.assert_allclose(weight, 1, atol=1e-5)


def _depth(spans, n):
    depth = np.zeros(n, int)
    for a, b in spans:
        depth[a:b] += 1
    return depth.max()


def test_edges_are_not_attenuated():
    tiles = plan_tiles((300, 300), 128, 32, 8)
    corner = next(t for t in tiles if t.y0 == 0 and t.x0 == 0)
    w = tile_weight(corner)
    assert w[0, 0] == 1 and w[0, :50].min() == 1 and w[-1, -1] < 0.05
    blender = Blender((300, 300))
    for t in tiles:
        blender.add(t, np.full(t.shape, 7.0, np.float32))
    np.testing.assert_allclose(blender.result(), 7.0, rtol=1e-6)


def test_auto_sizes():
    assert auto_tile((520, 696), 8) == 696  # a BBBC006 image is one tile on CPU
    # Above that, the CPU tile of 640-768 px computing the least area: 9 tiles of 768 for 2048²
    # instead of 16 of 640; planes over 4096² (streamed, 1 GB for 8192²) stay at 640.
    assert auto_tile((2048, 2048), 16) == 768 and auto_tile((2048, 2048), 64) == 768
    assert len(plan_tiles((2048, 2048), 768, auto_overlap(768, 64), 64)) == 9
    assert auto_tile((1024, 1024), 64) == 640 and auto_tile((8192, 8192), 64) == 640
    assert auto_tile((2048, 2048), 16, "cuda") == 2048
    # At least two 64-px scan windows of overlap, at most half the tile, on the grid.
    assert auto_overlap(768, 64) == 128 and auto_overlap(2048, 64) == 256 and auto_overlap(256, 64) == 128
    assert auto_overlap(128, 8) == 64 and auto_overlap(128, 48) == 48
    assert halve_tile(512, 8) == 256 and halve_tile(64, 8) is None
    with pytest.raises(InputError):
        plan_tiles((100, 100), 32, 32, 8)


# --------------------------------------------------------------------------------------------------
# the engine: units, shapes, dask


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("tile", ["auto", 32])
def test_identity_model_gives_back_the_input(dtype, tile):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, info.max) if info else (-3.5, 1e4)
    image = rng.uniform(lo, hi, (2, 70, 90)).astype(dtype)
    out = deblur(image, Identity(), tile=tile, overlap=16)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, image.astype(np.float64), rtol=1e-5, atol=(hi - lo) * 1e-6)


@pytest.mark.parametrize("shape", [(64, 72), (3, 64, 72), (2, 2, 48, 40)])
def test_output_shape_and_dtype(tiny, shape):
    image = (np.random.default_rng(2).random(shape) * 4000).astype(np.uint16)
    out = deblur(image, tiny)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()


def test_planes_keep_their_place(tiny):
    plane = smooth((64, 64))
    stack = np.stack([plane, plane * 0 + plane.mean(), plane])
    out = deblur(stack, tiny)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_dask_input_is_computed_plane_by_plane(tiny):
    planes = [smooth((64, 64), seed=i) for i in range(4)]
    computed = []

    def load(i):
        computed.append(i)
        return planes[i]

    lazy = da.stack(
        [da.from_delayed(dask.delayed(load)(i), shape=(64, 64), dtype=np.float32) for i in range(4)]
    )
    seen = []

    class Spy(Identity):
        def forward(self, x, element_size=None, flux=None):
            seen.append(len(computed))
            return x

    out = deblur(lazy, Spy(), tile=32, overlap=16)
    assert isinstance(out, np.ndarray) and out.shape == (4, 64, 64)
    np.testing.assert_allclose(out, np.stack(planes), rtol=1e-5, atol=1e-3)
    per_plane = len(seen) // 4
    # each plane is read twice, for its own normalisation and then band by band, just before its
    # tiles run (not once per tile, never the whole stack at once)
    assert seen == [2 * (p + 1) for p in range(4) for _ in range(per_plane)]
    np.testing.assert_allclose(deblur(lazy, tiny), deblur(np.stack(planes), tiny), rtol=1e-5, atol=1e-3)


def test_dask_with_nan_is_refused():
    data = np.ones((3, 32, 32), np.float32)
    data[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        deblur(da.from_array(data, chunks=(1, 32, 32)), Identity())


# --------------------------------------------------------------------------------------------------
# tiling inside the engine


def test_tiled_matches_single_pass(tiny):
    """Measured on the random-init tiny model (smooth 256² input, tile 128, overlap 64): max |diff|
    ≈ 0.4 % and mean ≈ 0.02 % of the output's range. Tiles see less context than the whole image
    (the encoder's scan is global per tile), so equality is approximate; we allow 2 % / 0.2 %."""
    image = smooth((256, 256))
    whole = deblur(image, tiny)
    info = {}
    tiled = deblur(image, tiny, tile=128, overlap=64, info=info)
    assert info["tiles_per_plane"] == 9
    span = whole.max() - whole.min()
    diff = np.abs(tiled - whole) / span
    assert diff.max() < 0.02 and diff.mean() < 0.002, (diff.max(), diff.mean())


def _seam_ratio(out, tiles):
    """Mean |gradient| across tile borders / mean |gradient| everywhere."""
    gx, gy = np.abs(np.diff(out, axis=1)), np.abs(np.diff(out, axis=0))
    xs = {t.x0 for t in tiles if t.x0} | {t.x1 for t in tiles if t.x1 < out.shape[1]}
    ys = {t.y0 for t in tiles if t.y0} | {t.y1 for t in tiles if t.y1 < out.shape[0]}
    border = np.mean([gx[:, x - 1].mean() for x in xs] + [gy[y - 1].mean() for y in ys])
    return border / ((gx.mean() + gy.mean()) / 2)


def test_no_seams(tiny):
    image = smooth((256, 256))
    tiles = plan_tiles(image.shape, 96, 32, 8)
    assert _seam_ratio(deblur(image, tiny, tile=96, overlap=32), tiles) < 1.5
    # A network whose output shifts with each tile's mean would leave hard steps without feathering:
    image = smooth((288, 288))  # 3 x 96: with no overlap the tiles just abut
    hard = deblur(image, TileMean(), tile=96, overlap=0)
    feathered = deblur(image, TileMean(), tile=96, overlap=32)
    assert _seam_ratio(hard, plan_tiles(image.shape, 96, 0, 8)) > 3
    assert _seam_ratio(feathered, plan_tiles(image.shape, 96, 32, 8)) < 1.5


def test_out_of_memory_halves_the_tile():
    class Small(Identity):
        def forward(self, x, element_size=None, flux=None):
            if max(x.shape[-2:]) > 80:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    image = smooth((200, 200))
    calls = []
    info = {}
    out = deblur(image, Small(), progress=lambda d, t: calls.append((d, t)), info=info)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-3)
    assert info["tile"] == 64 and calls[-1][0] == calls[-1][1]

    class Never(Identity):
        def forward(self, x, element_size=None, flux=None):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(DGNOError, match="out of memory"):
        deblur(image, Never())


# --------------------------------------------------------------------------------------------------
# progress and cancel


def test_progress_counts_tiles_times_planes():
    calls = []
    info = {}
    deblur(
        smooth((3, 100, 100)),
        Identity(),
        tile=48,
        overlap=16,
        progress=lambda d, t: calls.append((d, t)),
        info=info,
    )
    total = info["tiles_per_plane"] * 3
    assert info["tiles_per_plane"] == 9
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_cancel_raises_and_stops():
    net = Identity()
    calls = []
    with pytest.raises(Cancelled):
        deblur(
            smooth((3, 100, 100)),
            net,
            tile=48,
            overlap=16,
            progress=lambda d, t: calls.append(d),
            cancel=lambda: len(calls) >= 3,
        )
    assert net.calls == 3 and calls == [1, 2, 3]


# --------------------------------------------------------------------------------------------------
# input rules


def test_constant_images_come_back_unchanged(tiny):
    for image in (np.full((40, 40), 7, np.uint16), np.zeros((2, 32, 48), np.float32)):
        out = deblur(image, tiny)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_array_equal(out, image.astype(np.float32))


def test_sparse_spots_fall_back_to_min_max(tiny):
    image = np.zeros((64, 64), np.uint16)
    image[10, 10] = image[40, 50] = 1000  # both percentiles are 0
    info = {}
    out = deblur(image, tiny, info=info)
    assert np.isfinite(out).all() and info["normalization"]["hi"] == 1000
    assert np.abs(out).max() < 1e5


@pytest.mark.parametrize(
    "image, words",
    [
        (np.array([[1.0, np.nan] * 8] * 16), ["NaN"]),
        (np.array([[1.0, np.inf] * 8] * 16, np.float32), ["infinite"]),
        (np.zeros((64, 64, 3), np.uint8), ["RGB"]),
        (np.zeros((2, 64, 64, 4), np.float32), ["RGB"]),
        (np.zeros((0, 16)), ["empty"]),
        (np.zeros((1, 1)), ["at least 8x8"]),
        (np.zeros((7, 100)), ["at least 8x8"]),
        (np.zeros(100), ["2 dimensions"]),
        (np.float32(3), ["2 dimensions"]),
        (np.zeros((16, 16), bool), ["boolean"]),
        (np.zeros((16, 16), complex), ["complex"]),
        (np.zeros((16, 16), object), ["object"]),
        (np.full((16, 16), "a"), ["text"]),
    ],
)
def test_bad_images(image, words):
    with pytest.raises(InputError) as err:
        deblur(image, Identity())
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_rgb_with_channel_axis(tiny):
    rgb = np.random.default_rng(3).integers(0, 255, (48, 56, 3)).astype(np.uint8)
    out = deblur(rgb, Identity(), channel_axis=-1)
    np.testing.assert_allclose(out, rgb, atol=1e-3)
    assert deblur(rgb, tiny, channel_axis=2).shape == (48, 56, 3)
    lazy = da.from_array(rgb, chunks=(48, 56, 1))
    np.testing.assert_allclose(deblur(lazy, Identity(), channel_axis=-1), rgb, atol=1e-3)
    with pytest.raises(InputError, match="channel_axis"):
        deblur(rgb, Identity(), channel_axis=3)
    with pytest.raises(InputError, match="channel_axis"):
        deblur(rgb[..., 0], Identity(), channel_axis=0)


@pytest.mark.parametrize(
    "shape, element_size", [((8, 8), None), ((20, 13), None), ((20, 13), 16), ((9, 40), 0)]
)
def test_planes_smaller_than_an_element_are_padded(tiny, shape, element_size):
    image = smooth(shape, sigma=1)
    out = deblur(image, tiny, element_size=element_size)
    assert out.shape == shape and np.isfinite(out).all()


@pytest.mark.parametrize(
    "options, words",
    [
        ({"element_size": 6}, ["multiple"]),
        ({"flux": "upwind"}, ["flux"]),
        ({"device": "gpu0"}, ["device"]),
        ({"tile": "big"}, ["tile"]),
        ({"tile": 4}, ["tile"]),
        ({"tile": 64, "overlap": 64}, ["overlap"]),
        ({"overlap": -8}, ["overlap"]),
    ],
)
def test_bad_options(tiny, options, words):
    with pytest.raises(InputError) as err:
        deblur(smooth((100, 100)), tiny, **options)
    for word in words:
        assert word in str(err.value)


def test_training_mode_and_threads_are_restored(tiny):
    tiny.train()
    before = torch.get_num_threads()
    deblur(smooth((32, 32)), tiny, threads=2)
    assert tiny.training and torch.get_num_threads() == before
    tiny.eval()


def test_nafnet_ignores_elements():
    net = build_model("nafnet", NAFNetConfig(width=8, enc_blocks=(1, 1), dec_blocks=(1, 1)))
    info = {}
    out = deblur(smooth((40, 50)), net, element_size=16, flux="p0dg", info=info)
    assert out.shape == (40, 50) and info["flux"] is None


# --------------------------------------------------------------------------------------------------
# finding and loading models


@pytest.fixture
def model_dirs(tmp_path, monkeypatch, tiny):
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    shipped.mkdir()
    user.mkdir()
    monkeypatch.setattr(registry, "shipped_model_dir", lambda: shipped)
    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(user))
    return shipped, user


def test_no_shipped_models(model_dirs):
    with pytest.raises(CheckpointError, match="no shipped model"):
        load_model()
    with pytest.raises(CheckpointError, match="no shipped model named 'dgno-small'"):
        load_model("dgno-small")


def test_user_and_shipped_models(model_dirs, tiny, tmp_path):
    shipped, user = model_dirs
    save_checkpoint(shipped / "tiny-face", tiny, {"preset": "tiny", "metrics": {"psnr": 28.0}})
    save_checkpoint(shipped / "tiny-p0dg", tiny, {"preset": "tiny", "flux": "p0dg"})
    save_checkpoint(user / "mine", tiny, {"preset": "tiny", "element_size": 16})
    (user / "broken.json").write_text(json.dumps({"format": "napari-dgno-checkpoint"}))
    (shipped / "models.json").write_text(json.dumps({"default": "tiny-p0dg", "models": ["tiny-p0dg"]}))
    models = {m["name"]: m for m in list_models()}
    assert set(models) == {"tiny-face", "tiny-p0dg", "mine", "broken"}
    assert models["tiny-face"]["source"] == "shipped" and models["mine"]["source"] == "user"
    assert models["tiny-face"]["metrics"] == {"psnr": 28.0} and models["mine"]["element_size"] == 16
    assert models["mine"]["params"] > 0 and "error" in models["broken"]
    assert models["tiny-p0dg"]["default"] and not models["tiny-face"]["default"]
    assert registry.default_model_name() == "tiny-p0dg"
    assert registry.default_model_name(flux="face") == "tiny-face"
    assert registry.default_model_name(flux="none") is None
    assert load_model().name == "tiny-p0dg"
    dm = load_model("mine", device="cpu")
    assert dm.element_size == 16 and dm.device == torch.device("cpu") and not dm.net.training
    assert load_model(str(user / "mine.safetensors")).name == "mine"
    assert load_model("mine").net is not dm.net  # fresh networks: safe to fine-tune or move
    with pytest.raises(CheckpointError, match="known: tiny-p0dg"):
        load_model("theirs")
    out = deblur(smooth((40, 40)), "mine")
    assert out.shape == (40, 40)
    info = {}
    deblur(smooth((40, 40)), dm, info=info)
    assert info["element_size"] == 16 and info["model"] == "mine"
