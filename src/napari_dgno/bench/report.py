"""Benchmark tables: Markdown for the README, plain text for a terminal, JSON for machines.

Numbers are means ± standard errors over images; the JSON also carries every per-image value.
Files are written atomically (temporary name, fsync, rename): an interrupted run never leaves a
half-written ``bench.md`` next to an old ``bench.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from napari_dgno.io.atomic import atomic_path

DASH = "—"
COLUMNS = (
    "method",
    "PSNR (dB)",
    "SSIM",
    "default − row, PSNR (dB)",
    "PSNR / SSIM (min–max)",
    "grid ratio max / median",
    "params (M)",
    "GMACs/256²",
    "CPU ms/MPx",
    "settings",
)
SOURCES = ("cells3d", "procedural")


def _num(value, fmt: str) -> str:
    return DASH if value is None or not math.isfinite(value) else format(value, fmt)


def _pm(mean, se, fmt: str, sign: bool = False) -> str:
    """``mean ± se``; just the mean when there is no s.e. (one image)."""
    if mean is None or not math.isfinite(mean):
        return DASH
    text = format(mean, ("+" if sign else "") + fmt)
    return text if se is None or not math.isfinite(se) else f"{text} ± {format(se, fmt)}"


def _pair(psnr, ssim) -> str:
    return DASH if psnr is None else f"{_num(psnr, '.2f')} / {_num(ssim, '.3f')}"


def _grid(row) -> str:
    return DASH if row.grid_max is None else f"{row.grid_max:.1f} / {row.grid_median:.1f}"


def _cells(row) -> list[str]:
    settings = row.settings if not row.skipped else f"skipped: {row.note}"
    return [
        row.method,
        _pm(row.psnr, row.psnr_se, ".2f"),
        _pm(row.ssim, row.ssim_se, ".3f"),
        _pm(row.lead_psnr, row.lead_psnr_se, ".2f", sign=True),
        _pair(row.psnr_minmax, row.ssim_minmax),
        _grid(row),
        _num(row.params_m, ".2f"),
        _num(row.gmacs, ".2f"),
        _num(row.ms_per_mpx, ".0f"),
        settings,
    ]


def _sources(report) -> list[str]:
    found = {s for r in report.rows for s in r.by_source}
    return [s for s in SOURCES if s in found] + sorted(found - set(SOURCES))


def _source_header(report) -> list[str]:
    counts = report.meta["test_set"].get("sources", {})
    out = ["method"]
    for s in _sources(report):
        n = counts.get(s)
        name = f"{s} ({n})" if n else s
        out += [f"{name} PSNR", f"{name} SSIM", f"{name} default − row"]
    return out


def _source_rows(report) -> list[list[str]]:
    rows = []
    for r in report.rows:
        if r.skipped:
            continue
        cells = [r.method]
        for s in _sources(report):
            st = r.by_source.get(s, {})
            cells += [
                _pm(st.get("psnr"), st.get("psnr_se"), ".2f"),
                _pm(st.get("ssim"), st.get("ssim_se"), ".3f"),
                _pm(st.get("lead_psnr"), st.get("lead_psnr_se"), ".2f", sign=True),
            ]
        rows.append(cells)
    return rows


def _jump_cells(row) -> list[str]:
    return [row.method] + [DASH if g is None else f"{g:+.2f}" for g in row.jump_gain_db]


def _jump_rows(report) -> list[list[str]]:
    rows = [_jump_cells(r) for r in report.rows if not r.skipped and r.kind != "input"]
    fractions = report.meta.get("jump_pixel_fraction", [])
    rows.insert(0, ["(share of test pixels)"] + [f"{100 * f:.0f} %" for f in fractions])
    return rows


def _range(values, fmt: str) -> str:
    values = list(values)
    if not values:
        return DASH
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}–{format(hi, fmt)}"


def _header_lines(report) -> list[str]:
    m = report.meta
    t = m["test_set"]
    c = m["classical_settings"]
    counts = ", ".join(f"{n} {s}" for s, n in t.get("sources", {}).items())
    sides = [s for shape in t.get("shapes", []) for s in shape]
    blur = _range(t.get("max_blur_radius_px", []), ".1f")
    truth_max, truth_median = t.get("truth_grid_ratio") or (None, None)
    validation = m.get("validation_set") or {}
    reference = m.get("reference_model")
    lines = [
        f"Test set: {len(t['images'])} images ({counts}), {_range(sides, 'd')} px a side, each under its "
        f"own random microscope; largest blur radius per image {blur} px (geometric); "
        f"camera noise; fingerprint `{t['fingerprint']}`" + (" (quick)" if m.get("quick") else "") + ".",
        f"CPU: {m['cpu']}, {m['threads']} torch thread(s), torch {m['torch']}; "
        f"whole run {m['seconds']:.0f} s.",
        "PSNR / SSIM: data range fixed from the ground truth, mean ± standard error over images; "
        "min–max: each image min–max normalised to [0, 1] first, as the paper reports (means).",
        (
            f"default − row: the paired per-image difference {reference} − this row, mean ± s.e."
            if reference
            else "default − row: not computed (the default model did not load)."
        ),
        "Grid ratio: spectral power at the 4- and 8-px periods over the neighbouring frequencies "
        "(`metrics.grid_ratio`; an invented grid scores tens or more), max / median over the test "
        f"images; the true sharp images score {_num(truth_max, '.1f')} / {_num(truth_median, '.1f')}.",
        "Classical methods get each image's true optics and one blur level, a geometric blur radius R "
        "(px) tuned on the validation set"
        + (f" (fingerprint `{validation['fingerprint']}`)" if validation.get("fingerprint") else "")
        + f": Wiener R = {c['wiener_radius_px']:g} px, balance {c['wiener_balance']:g}; "
        f"RL R = {c['rl_radius_px']:g} px, {c['rl_iterations']} iterations; "
        f"RL-TV R = {c['rltv_radius_px']:g} px, λ = {c['rltv_weight']:g}, {c['rltv_iterations']} iterations; "
        f"oracles (true depth map and optics): patch-wise RL {c['patch_rl_iterations']}, "
        f"spatially variant RL {c['sv_rl_iterations']} iterations.",
    ]
    if m.get("element_sweep_note"):
        lines.append(f"Element-size rows: {m['element_sweep_note']}.")
    lines += [f"Note: {n}" for n in t.get("notes", [])]
    return lines


def _jump_title(report) -> str:
    threshold = report.meta["jump_threshold_px"]
    return (
        "Mean local PSNR gain over the blurred input (dB, GT range) by distance to the nearest blur "
        f"jump (neighbouring geometric blur radii differ by more than {threshold:g} px)"
    )


SOURCE_TITLE = "Per source (mean ± s.e. over that source's images)"
REAL_TITLE = "Real images (no ground truth; for looking and checking only, never for selection)"
REAL_COLUMNS = (
    "image",
    "size",
    "grid ratio in → out",
    "sharpness in → out",
    "background noise out / in",
    "seconds",
)


def _real_lines(report) -> tuple[list[str], list[list[str]]] | None:
    section = report.meta.get("real_images")
    if not section:
        return None
    intro = [
        f"Model {section['model']} on the TIFFs in `{section['folder']}`. Grid ratio as above; sharpness: "
        "normalised Brenner gradient of the image smoothed by a 1-px Gaussian (higher = more fine "
        "detail; `bench/real.py`); background noise: robust s.d. of a high-pass in the dimmest 20 % of "
        "the input, output over input (above 1: noise amplified)."
    ]
    if section.get("note"):
        intro.append(f"Note: {section['note']}.")
    rows = [
        [
            r["name"],
            "x".join(str(s) for s in r["shape"]),
            f"{_num(r['grid_in'], '.1f')} → {_num(r['grid_out'], '.1f')}",
            f"{r['sharpness_in']:.4f} → {r['sharpness_out']:.4f}",
            _num(r["noise_ratio"], ".2f"),
            _num(r["seconds"], ".1f"),
        ]
        for r in section.get("images", [])
    ]
    return intro, rows


def to_markdown(report) -> str:
    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(out)

    parts = ["## Benchmark", "", *[f"{line}  " for line in _header_lines(report)], ""]
    parts += [table(COLUMNS, [_cells(r) for r in report.rows]), ""]
    parts += [f"### {SOURCE_TITLE}", "", table(_source_header(report), _source_rows(report)), ""]
    parts += [f"### {_jump_title(report)}", "", table(["method", *report.bins], _jump_rows(report)), ""]
    real = _real_lines(report)
    if real is not None:
        intro, rows = real
        parts += [f"### {REAL_TITLE}", "", *[f"{line}  " for line in intro], ""]
        parts += [table(REAL_COLUMNS, rows), ""] if rows else []
    return "\n".join(parts)


def to_plain(report) -> str:
    parts = [*_header_lines(report), ""]
    parts += [_plain_table(list(COLUMNS), [_cells(r) for r in report.rows]), ""]
    parts += [SOURCE_TITLE, _plain_table(_source_header(report), _source_rows(report)), ""]
    parts += [_jump_title(report), _plain_table(["method", *report.bins], _jump_rows(report))]
    real = _real_lines(report)
    if real is not None:
        intro, rows = real
        parts += ["", REAL_TITLE, *intro]
        parts += [_plain_table(list(REAL_COLUMNS), rows)] if rows else []
    return "\n".join(parts) + "\n"


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def to_json(report) -> str:
    data = {"meta": report.meta, "bins": report.bins, "rows": [r.to_dict() for r in report.rows]}
    return json.dumps(_finite(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _finite(value):
    """NaN / inf become null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_report(report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``out_dir`` (created if needed), atomically."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "bench.md", out_dir / "bench.json"
    for path, text in zip(paths, (to_markdown(report), to_json(report)), strict=True):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return paths
