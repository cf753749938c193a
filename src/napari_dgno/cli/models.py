"""``dgno models``: the installed models, then the presets' parameters and GMACs."""

from __future__ import annotations

from ._args import FLUX_CHOICES, PRESET_TABLE


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list installed models and the presets' size and cost",
        description="Shipped and user models, then parameters and GMACs of each preset and flux.",
    )
    p.add_argument("--size", type=int, default=256, help="image side for the GMAC count (default 256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_models)


def _format_metrics(metrics: dict) -> str:
    parts = []
    for key, value in (metrics or {}).items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key}={value}")
    return " ".join(parts) or "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def preset_costs(size: int = 256) -> list[dict]:
    """Parameters and GMACs of every (preset, flux) pair in the table, counted on the meta device."""
    from ..model.complexity import preset_cost

    out = []
    for preset in PRESET_TABLE:
        for flux in FLUX_CHOICES:
            params, gmacs = preset_cost(preset, flux, size)
            out.append({"preset": preset, "flux": flux, "params": params, "gmacs": gmacs, "size": size})
    return out


def run_models(args) -> int:
    from ..registry import list_models, shipped_model_dir, user_model_dir

    models = list_models()
    costs = preset_costs(args.size)
    if args.json:
        import json

        print(json.dumps({"models": models, "presets": costs}, indent=2, default=str))
        return 0
    print("Models")
    if models:
        rows = []
        for m in models:
            if "error" in m:
                rows.append([m["name"], m["source"], "-", "-", "-", "-", f"unreadable: {m['error']}"])
                continue
            name = m["name"] + (" (default)" if m.get("default") else "")
            params = f"{m['params'] / 1e6:.2f} M" if m.get("params") else "-"
            rows.append(
                [
                    name,
                    m["source"],
                    m.get("preset") or m.get("architecture", "-"),
                    m.get("flux") or "-",
                    str(m["element_size"]) if m.get("element_size") is not None else "-",
                    params,
                    _format_metrics(m.get("metrics")),
                ]
            )
        print(_table(rows, ["name", "source", "preset", "flux", "element px", "params", "metrics"]))
    else:
        print(f"  (none: nothing shipped in {shipped_model_dir()}, no user models in {user_model_dir()})")
    print()
    print(f"Presets: parameters and GMACs (as the paper counts GFLOPs) per {args.size}x{args.size} image")
    rows = [
        [c["preset"], c["flux"], f"{c['params']:,}", f"{c['params'] / 1e6:.2f} M", f"{c['gmacs']:.2f}"]
        for c in costs
    ]
    print(_table(rows, ["preset", "flux", "parameters", "params", "GMACs"]))
    return 0
