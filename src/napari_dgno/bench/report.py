"""Benchmark tables: Markdown for the README, plain text for a terminal, JSON for machines.

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
    "PSNR / SSIM (GT range)",
    "PSNR / SSIM (min–max)",
    "params (M)",
    "GMACs/256²",
    "CPU ms/MPx",
    "settings",
)


def _num(value, fmt: str) -> str:
    return DASH if value is None or not math.isfinite(value) else format(value, fmt)


def _pair(psnr, ssim) -> str:
    return DASH if psnr is None else f"{_num(psnr, '.2f')} / {_num(ssim, '.3f')}"


def _cells(row) -> list[str]:
    settings = row.settings if not row.skipped else f"skipped: {row.note}"
    return [
        row.method,
        _pair(row.psnr, row.ssim),
        _pair(row.psnr_minmax, row.ssim_minmax),
        _num(row.params_m, ".2f"),
        _num(row.gmacs, ".2f"),
        _num(row.ms_per_mpx, ".0f"),
        settings,
    ]


def _jump_cells(row) -> list[str]:
    return [row.method] + [DASH if g is None else f"{g:+.2f}" for g in row.jump_gain_db]


def _jump_rows(report) -> list[list[str]]:
    rows = [_jump_cells(r) for r in report.rows if not r.skipped and r.kind != "input"]
    fractions = report.meta.get("jump_pixel_fraction", [])
    rows.insert(0, ["(share of test pixels)"] + [f"{100 * f:.0f} %" for f in fractions])
    return rows


def _header_lines(report) -> list[str]:
    m = report.meta
    t = m["test_set"]
    size = "x".join(str(s) for s in t["size"] or [])
    c = m["classical_settings"]
    lines = [
        f"Test set: {len(t['images'])} images of {size} px (procedural nuclei + held-out cells3d slices), "
        f"scatter blur up to {t['max_defocus_um']:g} µm, camera noise; fingerprint `{t['fingerprint']}`"
        + (" (quick)" if m.get("quick") else "")
        + ".",
        f"CPU: {m['cpu']}, {m['threads']} torch thread(s), torch {m['torch']}; "
        f"whole run {m['seconds']:.0f} s.",
        "PSNR / SSIM (GT range): data range fixed from the ground truth (honest); "
        "min–max: each image min–max normalised to [0, 1] first, as the paper reports.",
        "Classical settings tuned on a separate tuning set "
        f"(fingerprint `{c.get('tuning_fingerprint', '')}`): "
        f"Wiener z = {c['wiener_z_um']:g} µm, balance {c['wiener_balance']:g}; "
        f"RL z = {c['rl_z_um']:g} µm, {c['rl_iterations']} iterations; "
        f"patch-wise RL {c['patch_rl_iterations']}, spatially variant RL {c['sv_rl_iterations']} iterations.",
    ]
    lines += [f"Note: {n}" for n in t.get("notes", [])]
    return lines


def _jump_title(report) -> str:
    return (
        "Mean local PSNR gain over the blurred input (dB, GT range) by distance to the nearest depth "
        f"jump (neighbouring depths differ by more than {report.meta['jump_threshold_um']:g} µm)"
    )


def to_markdown(report) -> str:
    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(out)

    parts = ["## Benchmark", "", *[f"{line}  " for line in _header_lines(report)], ""]
    parts += [table(COLUMNS, [_cells(r) for r in report.rows]), ""]
    parts += [f"### {_jump_title(report)}", "", table(["method", *report.bins], _jump_rows(report)), ""]
    return "\n".join(parts)


def to_plain(report) -> str:
    parts = [*_header_lines(report), ""]
    parts += [_plain_table(list(COLUMNS), [_cells(r) for r in report.rows]), ""]
    parts += [_jump_title(report), _plain_table(["method", *report.bins], _jump_rows(report))]
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
