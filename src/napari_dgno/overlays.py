"""Per-element overlays: what the network does in each element, and which blur it undoes there.

Pure numpy/torch (no Qt, no napari), so the overlay widget, scripts and tests share one implementation.

* **Learned kernel** of element e: DGNO is nonlinear and not shift-invariant, but around a given input x
  it acts locally like a linear filter. Its *local effective kernel* at the element centre c is the row of
  the Jacobian, ``K_e(u) = ∂y(c) / ∂x(c + u)`` for ``|u| ≤ k // 2`` — the weights with which the
  output pixel at c mixes its input neighbourhood. One backward pass gives the gradient of a *sum* of
  outputs, so centres are processed in groups that lie ``stride`` elements apart: the crop around c then
  also holds the tails of the other centres' rows, which are ≥ ``stride · E − k // 2`` px away.
  ``stride`` is chosen so that distance is at least 1.5 k (the tails are tiny there; the error is the
  price of g² instead of one backward pass per element). Large images are processed in the engine's
  element-aligned tiles, each element in the tile where it has the most context.
* **Estimated PSF**: the defocus PSF that best explains the input given the restored output
  (:func:`napari_dgno.physics.fit.fit_defocus_map`), with its defocus in µm.
* **Geometry**: napari puts pixel *centres* at integer coordinates, so a k×k tile drawn over an element
  of E px needs ``scale = s · E / k`` and ``translate = t + s · (E / k − 1) / 2`` to cover exactly the
  element's footprint ``[t + s (iE − ½), t + s ((i+1)E − ½)]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import Cancelled, InputError
from .inference import engine
from .normalize import fit_normalization
from .physics.fit import fit_defocus_map
from .physics.psf import Optics
from .tiling import plan_tiles

__all__ = [
    "ElementGrid",
    "ElementOverlays",
    "compute_overlays",
    "default_kernel_size",
    "element_map_transform",
    "element_rectangles",
    "kernel_moments",
    "learned_kernels",
    "element_map",
    "mosaic",
    "mosaic_transform",
    "normalize_for_display",
]

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

KERNEL_TILE = 512  # autograd keeps every activation: smaller tiles than plain inference
KERNEL_WHOLE_PIXELS = 400_000  # up to this, the whole plane is one pass (~2.5 GB of activations)
# Centres seeded in one backward pass lie ≥ stride·E apart, so each crop holds the other rows' tails
# from ≥ SEPARATION·k px out. At 1.0 (E = 16, k = 17: stride 2, 4 passes instead of 9 at 1.5) the
# kernels differ from stride 5 by a median 0.3-0.6 % of their peak (max 4-10 %, in faint background
# elements) on a BBBC006 image with the shipped and the retrained default model.
KERNEL_SEPARATION = 1.0
OVERLAY_SMOOTH = 1.0  # elements: neighbours' PSF fits join each element's (physics/fit.py)


# --------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class ElementGrid:
    """The partition of an (H, W) plane into E×E elements from the top-left corner, as DGNO makes it
    (the network pads at the bottom/right, so the last row/column of elements may be partial)."""

    shape: tuple[int, int]
    element_size: int

    def __post_init__(self):
        if int(self.element_size) < 1:
            raise InputError(f"element size must be at least 1 px, got {self.element_size}")

    @property
    def rows(self) -> int:
        return -(-int(self.shape[0]) // int(self.element_size))

    @property
    def cols(self) -> int:
        return -(-int(self.shape[1]) // int(self.element_size))

    def centres(self) -> np.ndarray:
        """(rows, cols, 2) integer pixel centres of the elements' parts that lie inside the image."""
        e = int(self.element_size)
        h, w = (int(s) for s in self.shape)
        ys = np.array([(i * e + min((i + 1) * e, h)) // 2 for i in range(self.rows)])
        xs = np.array([(j * e + min((j + 1) * e, w)) // 2 for j in range(self.cols)])
        return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)


def mosaic_transform(
    scale: Sequence[float], translate: Sequence[float], element_size: int, kernel_size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Layer ``scale``/``translate`` for a mosaic of k×k tiles, one per element of the image whose
    layer has ``scale``/``translate`` (its last two axes): each tile covers exactly its element."""
    s = np.asarray(scale, dtype=float)
    t = np.asarray(translate, dtype=float)
    ratio = element_size / kernel_size
    return tuple(float(v) for v in s * ratio), tuple(float(v) for v in t + s * (ratio - 1) / 2)


def element_map_transform(
    scale: Sequence[float], translate: Sequence[float], element_size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Layer ``scale``/``translate`` for a map with one value per element (a 1×1 mosaic)."""
    return mosaic_transform(scale, translate, element_size, 1)


def element_rectangles(grid: ElementGrid) -> list[np.ndarray]:
    """One (4, 2) rectangle per element (row-major), in the image's pixel coordinates: pixel edges
    lie at half-integers, so element (i, j) spans ``[iE − ½, (i+1)E − ½]`` (clipped to the image)."""
    e = int(grid.element_size)
    h, w = grid.shape
    out = []
    for i in range(grid.rows):
        y0, y1 = i * e - 0.5, min((i + 1) * e, h) - 0.5
        for j in range(grid.cols):
            x0, x1 = j * e - 0.5, min((j + 1) * e, w) - 0.5
            out.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float))
    return out


def mosaic(
    tiles: np.ndarray, shape: Sequence[int] | None = None, element_size: int | None = None
) -> np.ndarray:
    """(rows, cols, k, k) -> (rows·k, cols·k): tile (i, j) at ``[i k:(i+1) k, j k:(j+1) k]``.

    With the image's ``shape`` and ``element_size``, a partial last row/column of elements (an image
    that is not a whole number of elements) keeps only the central ``round(k · part / E)`` rows/columns
    of its tiles, so it is drawn at its true size instead of reaching past the image's edge.
    """
    rows, cols, kh, kw = tiles.shape
    out = tiles.transpose(0, 2, 1, 3).reshape(rows * kh, cols * kw)
    if shape is None or element_size is None:
        return out
    keep = []
    for n, k, side in ((rows, kh, int(shape[-2])), (cols, kw, int(shape[-1]))):
        part = side - (n - 1) * int(element_size)  # px of the last element inside the image
        m = max(1, min(k, round(k * part / int(element_size))))
        index = np.arange(n * k)
        first = (k - m) // 2
        last_tile = index >= (n - 1) * k
        offset = index - (n - 1) * k
        keep.append(~last_tile | ((offset >= first) & (offset < first + m)))
    cropped = out[keep[0]][:, keep[1]]
    return cropped


def element_map(values: np.ndarray, shape: Sequence[int], element_size: int, max_factor: int = 16):
    """A per-element map (rows, cols) as an image whose pixels are ``E / f`` image px, so that partial
    elements at the bottom/right are drawn at their true size: ``(image, f)``. ``f`` divides E and the
    partial sizes where it can (at most ``max_factor``; beyond it the edge is within E / f px)."""
    e = int(element_size)
    h, w = (int(v) for v in shape[-2:])
    cell = math.gcd(e, h % e or e, w % e or e)
    f = min(e // cell, int(max_factor))
    big = np.repeat(np.repeat(np.asarray(values), f, axis=0), f, axis=1)
    return big[: max(1, round(h * f / e)), : max(1, round(w * f / e))], f


def default_kernel_size(element_size: int) -> int:
    """Odd (the kernel has a centre pixel) and about one element wide, so one tile ≈ one element."""
    e = max(int(element_size), 3)
    return e + 1 if e % 2 == 0 else e


# --------------------------------------------------------------------------------------------------
# Learned kernels


def _net_and_device(model) -> tuple[torch.nn.Module, torch.device]:
    """Accept a loaded ``DeblurModel`` (``.net``, ``.device``) or a bare network."""
    net = getattr(model, "net", model)
    if not isinstance(net, torch.nn.Module):
        raise InputError(f"expected a napari-dgno model, got {type(model).__name__}")
    device = getattr(model, "device", None)
    if device is None:
        device = next(net.parameters()).device
    return net, torch.device(device)


def _auto_stride(element_size: int, kernel_size: int) -> int:
    # Centres processed together are ≥ stride·E apart; their rows' tails in each other's crop then
    # lie ≥ stride·E − k//2 ≥ KERNEL_SEPARATION · k px from their own centre.
    return max(1, math.ceil((KERNEL_SEPARATION * kernel_size + kernel_size // 2) / element_size))


def _pad_multiple(net, element_size: int) -> int:
    fn = getattr(net, "pad_multiple", None)
    return int(fn(element_size)) if callable(fn) else 1


def learned_kernels(
    model,
    image: np.ndarray,
    element_size: int | None = None,
    flux: str | None = None,
    *,
    kernel_size: int | None = None,
    stride: int | None = None,
    tile: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """Local effective kernel (Jacobian row ∂y(c)/∂x around each element centre c), (rows, cols, k, k).

    ``image`` is one 2-D plane in any units; it is normalised as for deblurring (percentiles), and
    since input and output share that affine map the Jacobian is the same in the image's own units.
    ``progress(done, total)`` counts backward passes; a truthy ``cancel()`` raises ``Cancelled``.
    """
    kernels, _ = _kernels_and_output(
        model, image, element_size, flux, kernel_size, stride, tile, progress, cancel
    )
    return kernels


def _kernels_and_output(model, image, element_size, flux, kernel_size, stride, tile, progress, cancel):
    """:func:`learned_kernels`, plus the network's restored image (in the image's units) when the
    plane was one pass, else None."""
    net, device = _net_and_device(model)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"kernels are computed on one 2-D plane, got shape {image.shape}")
    e = int(element_size if element_size is not None else net.config.element_size)
    if e < 1:
        raise InputError("the kernel overlay needs an element size > 0 (0 means one global element)")
    k = int(kernel_size or default_kernel_size(e))
    if k < 1 or k % 2 == 0:
        raise InputError(f"kernel size must be a positive odd integer, got {k}")
    g = int(stride or _auto_stride(e, k))
    grid = ElementGrid(image.shape, e)
    centres = grid.centres()
    h, w = image.shape
    half = k // 2

    multiple = _pad_multiple(net, e)
    if tile is None and h * w <= KERNEL_WHOLE_PIXELS:
        tile = max(h, w)
    tile = max(int(tile or KERNEL_TILE), 2 * multiple)
    tiles = plan_tiles((h, w), tile, min(max(64, 3 * k), tile // 2), multiple)
    owner = _assign_to_tiles(centres, tiles, (h, w))
    groups = [(a, b) for a in range(min(g, grid.rows)) for b in range(min(g, grid.cols))]
    passes = [(ti, a, b) for ti in range(len(tiles)) for (a, b) in groups if _members(owner, ti, a, b, g)]
    total = len(passes)

    norm = fit_normalization(image)
    x = norm.apply(image)
    kernels = np.zeros((grid.rows, grid.cols, k, k), dtype=np.float32)
    output = None
    was_training = net.training
    frozen = [p for p in net.parameters() if p.requires_grad]
    net.eval()
    for p in frozen:  # gradients for the input only: half the backward work, less memory
        p.requires_grad_(False)
    done = 0
    try:
        for ti, t in enumerate(tiles):
            mine = [p for p in passes if p[0] == ti]
            if not mine:
                continue
            if cancel is not None and cancel():
                raise Cancelled("kernel computation cancelled")
            xt = torch.from_numpy(np.ascontiguousarray(x[t.y0 : t.y1, t.x0 : t.x1])).to(device)
            xt = xt[None, None].requires_grad_(True)
            with torch.enable_grad():
                y = net(xt, element_size=e, flux=flux)
            if len(tiles) == 1:
                output = norm.invert(y.detach()[0, 0].float().cpu().numpy()[:h, :w])
            seed = torch.zeros_like(y)
            for _, a, b in mine:
                if cancel is not None and cancel():
                    raise Cancelled("kernel computation cancelled")
                members = _members(owner, ti, a, b, g)
                seed.zero_()
                for i, j in members:
                    cy, cx = centres[i, j]
                    seed[0, 0, cy - t.y0, cx - t.x0] = 1.0
                (grad,) = torch.autograd.grad(y, xt, grad_outputs=seed, retain_graph=True)
                padded = np.pad(grad[0, 0].detach().float().cpu().numpy(), half)
                for i, j in members:
                    cy, cx = centres[i, j] - (t.y0, t.x0)
                    kernels[i, j] = padded[cy : cy + k, cx : cx + k]
                done += 1
                if progress is not None:
                    progress(done, total)
            del y, xt
    finally:
        for p in frozen:
            p.requires_grad_(True)
        net.train(was_training)
    return kernels, output


def _assign_to_tiles(centres: np.ndarray, tiles, shape) -> np.ndarray:
    """Index of the tile in which each centre has the most context (image edges are no tile edge)."""
    h, w = shape
    best = np.full(centres.shape[:2], -1, dtype=np.int64)
    score = np.full(centres.shape[:2], -np.inf)
    cy, cx = centres[..., 0], centres[..., 1]
    for ti, t in enumerate(tiles):
        inside = (cy >= t.y0) & (cy < t.y1) & (cx >= t.x0) & (cx < t.x1)
        big = float(h + w)
        d = np.minimum.reduce(
            [
                cy - t.y0 if t.y0 > 0 else np.full_like(cy, big),
                t.y1 - 1 - cy if t.y1 < h else np.full_like(cy, big),
                cx - t.x0 if t.x0 > 0 else np.full_like(cx, big),
                t.x1 - 1 - cx if t.x1 < w else np.full_like(cx, big),
            ]
        ).astype(float)
        better = inside & (d > score)
        best[better], score[better] = ti, d[better]
    if (best < 0).any():  # a planning bug, never the user's fault
        raise RuntimeError("element centres outside every tile")
    return best


def _members(owner: np.ndarray, ti: int, a: int, b: int, g: int) -> list[tuple[int, int]]:
    sub = owner[a::g, b::g] == ti
    return [(a + g * i, b + g * j) for i, j in zip(*np.nonzero(sub), strict=True)]


# --------------------------------------------------------------------------------------------------
# Per-element descriptors


def normalize_for_display(tiles: np.ndarray) -> np.ndarray:
    """Each tile divided by its largest |value|: shapes comparable across elements, sign kept
    (deblurring kernels have negative side lobes), values in [−1, 1]."""
    tiles = np.asarray(tiles, dtype=np.float32)
    peak = np.abs(tiles).max(axis=(-2, -1), keepdims=True)
    return np.divide(tiles, peak, out=np.zeros_like(tiles), where=peak > 0)


def kernel_moments(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(width, anisotropy) per tile from the second moment of |K| about the tile centre.

    width = √(trace of the covariance) (second-moment radius, px); anisotropy = λmax / λmin of
    the covariance (1 = round). |K| rather than K because a deblurring kernel's negative ring is
    as much part of its reach as its positive core.
    """
    tiles = np.abs(np.asarray(tiles, dtype=np.float64))
    k = tiles.shape[-1]
    u = np.arange(k) - (k - 1) / 2
    yy, xx = np.meshgrid(u, u, indexing="ij")
    mass = tiles.sum(axis=(-2, -1))
    safe = np.where(mass > 0, mass, 1.0)
    cyy = (tiles * yy**2).sum(axis=(-2, -1)) / safe
    cxx = (tiles * xx**2).sum(axis=(-2, -1)) / safe
    cxy = (tiles * yy * xx).sum(axis=(-2, -1)) / safe
    trace, det = cyy + cxx, cyy * cxx - cxy**2
    disc = np.sqrt(np.maximum((trace / 2) ** 2 - det, 0.0))
    lmax, lmin = trace / 2 + disc, trace / 2 - disc
    width = np.sqrt(np.maximum(trace, 0.0))
    aniso = np.where(lmin > 1e-12, lmax / np.maximum(lmin, 1e-12), 1.0)
    width = np.where(mass > 0, width, 0.0)
    aniso = np.where(mass > 0, aniso, 1.0)
    return width.astype(np.float32), aniso.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Everything the overlay widget shows


@dataclass
class ElementOverlays:
    """Overlay data for one plane; tiles are raw (see :func:`normalize_for_display`)."""

    element_size: int
    kernel_size: int
    kernels: np.ndarray  # (rows, cols, k, k) local effective kernels
    psfs: np.ndarray  # (rows, cols, k, k) fitted defocus PSFs (sum 1)
    defocus_um: np.ndarray  # (rows, cols)
    fit_residual: np.ndarray  # (rows, cols) unexplained variance fraction of the PSF fit
    kernel_width: np.ndarray  # (rows, cols) second-moment radius, px
    kernel_anisotropy: np.ndarray  # (rows, cols) eigenvalue ratio ≥ 1
    confidence: np.ndarray | None = None  # (rows, cols) in [0, 1]: how well the data pins the defocus
    settings: dict = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.defocus_um.shape

    def features(self) -> dict[str, np.ndarray]:
        """Per-element table (row-major, matching :func:`element_rectangles`) for a Shapes layer."""
        rows, cols = self.grid_shape
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        return {
            "row": ii.ravel(),
            "col": jj.ravel(),
            "defocus_um": self.defocus_um.ravel().astype(np.float32),
            "kernel_width_px": self.kernel_width.ravel(),
            "kernel_anisotropy": self.kernel_anisotropy.ravel(),
            "fit_residual": self.fit_residual.ravel().astype(np.float32),
            "confidence": (
                np.ones(rows * cols, np.float32) if self.confidence is None else self.confidence.ravel()
            ).astype(np.float32),
        }


def compute_overlays(
    model,
    image: np.ndarray,
    element_size: int | None = None,
    flux: str | None = None,
    *,
    kernel_size: int | None = None,
    device="auto",
    optics=None,
    z_grid: np.ndarray | None = None,
    restored: np.ndarray | None = None,
    smooth: float = OVERLAY_SMOOTH,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> ElementOverlays:
    """Kernels, fitted PSFs, defocus (with its confidence) and kernel shape descriptors for one plane.

    ``restored`` (the deblurred plane) is the kernels' own forward pass when the plane is one pass,
    else computed with :func:`napari_dgno.deblur`. ``optics`` and ``z_grid`` (µm) define the PSF family
    searched (default: the simulator's, 0–32 µm); ``smooth`` (elements) regularises the defocus map
    across neighbouring elements. ``progress(done, total)`` runs over kernels then the fit in per-mille.
    """

    net, _ = _net_and_device(model)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"overlays are computed on one 2-D plane, got shape {image.shape}")
    e = int(element_size if element_size is not None else net.config.element_size)
    if e < 2:
        raise InputError("the overlay needs an element size of at least 2 px (0 = one global element)")
    k = int(kernel_size or default_kernel_size(e))

    def stage(lo: int, hi: int) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda done, total: progress(lo + (hi - lo) * done // max(total, 1), 1000)

    kernels, output = _kernels_and_output(model, image, e, flux, k, None, None, stage(0, 850), cancel)
    if restored is None:
        restored = output
    if restored is None:  # a large plane went in tiles: restore it as Deblur does
        restored = engine.deblur(
            image, model, element_size=e, flux=flux, device=device, progress=stage(850, 900), cancel=cancel
        )
    if cancel is not None and cancel():
        raise Cancelled("overlay cancelled")
    optics = optics or Optics()
    fit = fit_defocus_map(
        image, np.asarray(restored, dtype=np.float32), e, optics, z_grid=z_grid, kernel_size=k, smooth=smooth
    )
    if progress is not None:
        progress(1000, 1000)
    width, aniso = kernel_moments(kernels)
    return ElementOverlays(
        element_size=e,
        kernel_size=k,
        kernels=kernels,
        psfs=np.asarray(fit.psfs, dtype=np.float32),
        defocus_um=np.asarray(fit.z_um, dtype=np.float32),
        fit_residual=np.asarray(fit.residual, dtype=np.float32),
        kernel_width=width,
        kernel_anisotropy=aniso,
        confidence=np.asarray(fit.confidence, dtype=np.float32),
        settings={
            "element_size": e,
            "kernel_size": k,
            "flux": flux or getattr(net.config, "flux", None),
            "stride": _auto_stride(e, k),
            "smooth_elements": float(smooth),
            "optics": {
                "na": optics.na,
                "wavelength_um": optics.wavelength_um,
                "pixel_um": optics.pixel_um,
            },
        },
    )
