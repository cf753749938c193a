"""Bad input, swept: whatever array and tile settings `deblur` gets, it either refuses with a one-line
InputError or returns a finite float32 array of the input's shape. Never any other exception."""

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from napari_dgno.errors import InputError
from napari_dgno.inference import deblur

DTYPES = ["uint8", "uint16", "int16", "int32", "float16", "float32", "float64", "bool", "complex64", "object"]
RECIPES = ["random", "constant", "huge", "tiny", "negative", "spikes", "extremes", "outlier"]


def _limits(dtype: np.dtype) -> tuple[float, float]:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return -float(info.max), float(info.max)
    return 0.0, 1.0


def make_image(dtype: str, shape: tuple, recipe: str, seed: int, nonfinite: str | None) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` whose values follow ``recipe`` (built by numpy: fast)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    lo, hi = _limits(dt)
    u = rng.random(shape)
    if recipe == "random":
        values = u * min(hi, 4095.0)
    elif recipe == "constant":
        values = np.full(shape, rng.uniform(max(lo, -1e6), min(hi, 1e6)))
    elif recipe == "huge":  # near the dtype's own limit
        values = hi * (0.5 + 0.5 * u)
    elif recipe == "tiny":  # subnormal floats; 0/1 for integers
        values = u * (np.finfo(dt).tiny if dt.kind == "f" else 1.0)
    elif recipe == "negative":
        values = -u * min(-lo, 1e4) if lo < 0 else u
    elif recipe == "spikes":  # a flat field with a few bright pixels
        values = np.where(u > 0.995, min(hi, 1e4), 0.0)
    elif recipe == "outlier":  # ordinary values and one sentinel at the edge of float32's range
        values = u * min(hi, 1000.0)
        if values.size:
            values.flat[int(rng.integers(values.size))] = min(hi, 3e38)
    else:  # "extremes": the dtype's min and max side by side
        values = np.where(u > 0.5, hi, lo)
    if dt.kind == "c":
        image = (values + 1j * values).astype(dt)
    elif dt.kind == "O":
        image = values.astype(object)
    else:
        image = np.asarray(values).astype(dt)
    if nonfinite and dt.kind == "f" and image.size:
        image.flat[int(rng.integers(image.size))] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[nonfinite]
    return image


# Weighted towards inputs that reach the network (hypothesis' one_of picks its branches evenly).
NUMERIC = ["uint8", "uint16", "int16", "int32", "float16", "float32", "float64"]
dtypes = st.one_of(st.sampled_from(NUMERIC), st.sampled_from(NUMERIC), st.sampled_from(DTYPES))


@st.composite
def shapes(draw):
    """1-D to 4-D; Y, X in 0..70 (mostly >= 8), leading axes 0..3 (mostly >= 1)."""
    ndim = draw(st.sampled_from([2, 2, 2, 3, 3, 4, 1]))
    side = st.integers(0, 70) if draw(st.integers(0, 5)) == 0 else st.integers(8, 70)
    lead = st.integers(0, 3) if draw(st.integers(0, 5)) == 0 else st.integers(1, 3 if ndim == 3 else 2)
    if ndim == 1:
        return (draw(st.integers(0, 70)),)
    return tuple(draw(lead) for _ in range(ndim - 2)) + (draw(side), draw(side))


pixels = st.one_of(
    st.just("auto"), st.just("auto"), st.integers(-40, 120), st.sampled_from([0, 1, 10**9, -(10**9)])
)


def _check(out, image):
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == image.shape
    assert np.isfinite(out).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=dtypes,
    shape=shapes(),
    recipe=st.sampled_from(RECIPES),
    seed=st.integers(0, 2**16),
    nonfinite=st.sampled_from([None] * 7 + ["nan", "inf", "-inf"]),
    tile=pixels,
    overlap=pixels,
)
@example(
    dtype="float32", shape=(40, 40), recipe="extremes", seed=0, nonfinite=None, tile="auto", overlap="auto"
)
@example(
    dtype="float32", shape=(40, 40), recipe="outlier", seed=0, nonfinite=None, tile="auto", overlap="auto"
)
@example(dtype="float64", shape=(40, 40), recipe="huge", seed=0, nonfinite=None, tile="auto", overlap="auto")
@example(dtype="float64", shape=(40, 40), recipe="tiny", seed=0, nonfinite=None, tile=16, overlap=0)
@example(dtype="int32", shape=(2, 33, 65), recipe="extremes", seed=1, nonfinite=None, tile=32, overlap=8)
@example(dtype="uint16", shape=(9, 70), recipe="random", seed=2, nonfinite=None, tile=10**9, overlap=10**9)
def test_deblur_refuses_cleanly_or_returns_finite_float32(
    tiny, dtype, shape, recipe, seed, nonfinite, tile, overlap
):
    image = make_image(dtype, shape, recipe, seed, nonfinite)
    try:
        out = deblur(image, tiny, tile=tile, overlap=overlap, device="cpu")
    except InputError as err:
        message = str(err)
        assert message and "\n" not in message and message == message.strip(), message
        event(f"refused: {' '.join(message.split()[:4])}")
        return
    _check(out, image)
    event(f"restored {dtype}")
