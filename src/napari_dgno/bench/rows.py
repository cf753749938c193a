"""A bench row (one method's scores over the test set), the report that holds them, and the
statistics every row gets: means ± standard errors over images, per source, and paired leads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_dgno.bench.report import to_markdown, to_plain

SOURCES = ("cells3d", "procedural")


@dataclass
class BenchRow:
    """One method's scores over the test set; ``psnr is None`` means the row was skipped.

    Means are over images, ``*_se`` their standard errors (None below two images). ``lead_*``: the
    reference (default) model minus this row, per image, then mean ± s.e. (paired, so the spread
    that all methods share across images cancels). ``images`` holds the per-image values.
    """

    method: str
    kind: str  # input | classical | oracle | network | element sweep
    key: str = ""  # the model name or method key the row was made from
    psnr: float | None = None  # data range fixed from the ground truth
    ssim: float | None = None
    psnr_se: float | None = None
    ssim_se: float | None = None
    psnr_minmax: float | None = None  # each image min-max normalised, as the paper does
    ssim_minmax: float | None = None
    lead_psnr: float | None = None  # reference − this row, dB, paired over images
    lead_psnr_se: float | None = None
    lead_ssim: float | None = None
    lead_ssim_se: float | None = None
    by_source: dict = field(default_factory=dict)  # source -> the same statistics on its images
    grid_max: float | None = None  # grid ratio of the outputs, over images large enough for it
    grid_median: float | None = None
    params_m: float | None = None
    gmacs: float | None = None  # per 256 x 256 image
    ms_per_mpx: float | None = None  # CPU wall time per megapixel
    settings: str = ""
    note: str = ""
    jump_gain_db: list = field(default_factory=list)  # mean local PSNR gain per distance bin
    images: list = field(default_factory=list)  # per image: name, source, psnr, ssim, ..., grid_ratio

    @property
    def skipped(self) -> bool:
        return self.psnr is None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchReport:
    """The rows plus what is needed to read them (test-set fingerprint, threads, tuned settings).

    Iterates over its rows, so it can be used as the list of rows.
    """

    rows: list[BenchRow]
    bins: list[str]
    meta: dict

    def __iter__(self) -> Iterator[BenchRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def row(self, method_prefix: str) -> BenchRow:
        """The first row whose method starts with ``method_prefix``."""
        for r in self.rows:
            if r.method.startswith(method_prefix):
                return r
        raise KeyError(method_prefix)

    def markdown(self) -> str:
        return to_markdown(self)

    def plain(self) -> str:
        return to_plain(self)


def mean_se(values) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (sample s.d. / √n); s.e. None below two values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None
    return float(v.mean()), se


def _stats(images: list[dict]) -> dict:
    psnr, psnr_se = mean_se(i["psnr"] for i in images)
    ssim, ssim_se = mean_se(i["ssim"] for i in images)
    return {"n": len(images), "psnr": psnr, "psnr_se": psnr_se, "ssim": ssim, "ssim_se": ssim_se}


def summarise(row: BenchRow) -> None:
    """Fill a row's means ± s.e. (overall, per source) and grid-ratio summary from ``row.images``."""
    overall = _stats(row.images)
    row.psnr, row.psnr_se, row.ssim, row.ssim_se = (
        overall["psnr"],
        overall["psnr_se"],
        overall["ssim"],
        overall["ssim_se"],
    )
    row.psnr_minmax = mean_se(i["psnr_minmax"] for i in row.images)[0]
    row.ssim_minmax = mean_se(i["ssim_minmax"] for i in row.images)[0]
    sources = sorted({i["source"] for i in row.images}, key=lambda s: (s not in SOURCES, s))
    row.by_source = {s: _stats([i for i in row.images if i["source"] == s]) for s in sources}
    grids = [i["grid_ratio"] for i in row.images if i["grid_ratio"] is not None]
    row.grid_max, row.grid_median = max_median(grids)


def add_leads(rows: list[BenchRow], reference: str) -> None:
    """Paired per-image differences ``reference − row`` (PSNR, SSIM), overall and per source.

    Why paired: images differ far more from each other than methods do, so the s.e. of a difference
    of two means would hide a consistent lead; per image, that shared spread cancels.
    """
    ref = next((r for r in rows if r.key == reference and not r.skipped), None)
    if ref is None:
        return
    by_name = {i["name"]: i for i in ref.images}
    for row in rows:
        if row.skipped:
            continue
        pairs = [(by_name[i["name"]], i) for i in row.images if i["name"] in by_name]
        row.lead_psnr, row.lead_psnr_se = mean_se(a["psnr"] - b["psnr"] for a, b in pairs)
        row.lead_ssim, row.lead_ssim_se = mean_se(a["ssim"] - b["ssim"] for a, b in pairs)
        for source, stats in row.by_source.items():
            stats["lead_psnr"], stats["lead_psnr_se"] = mean_se(
                a["psnr"] - b["psnr"] for a, b in pairs if b["source"] == source
            )


def max_median(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    return (float(np.max(values)), float(np.median(values))) if values else (None, None)
