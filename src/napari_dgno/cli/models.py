"""``dgno models``: the installed models, then the presets' parameters and GMACs, without torch.

Why without torch: importing it takes about as long as the answer may (under 2 s), and counting a
preset means building it (a minute for all of them). Models are listed from their JSON and
safetensors headers (:mod:`napari_dgno.io.catalog`); preset costs come from ``preset_costs.json``,
counted once by :func:`write_cost_cache` and keyed by the model code's hash, so a changed network is
counted again (once, then remembered in the user cache folder) instead of shown stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ._args import FLUX_CHOICES, PRESET_TABLE

COST_CACHE = Path(__file__).with_name("preset_costs.json")
CACHED_SIZES = (256,)  # the default --size; other sizes are counted when asked for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list installed models and the presets' size and cost",
        description="Shipped and user models, then parameters and GMACs of each preset and flux.",
    )
    p.add_argument(
        "--size", type=int, default=256, help="image side for the GMAC count, 16-8192 (default 256)"
    )
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


def _validation(m: dict) -> str:
    """Validation PSNR with its gain over the blurred input of the same set, else the raw metrics."""
    if "val_psnr" in m:
        gain = m["val_psnr"] - m["val_input_psnr"]
        return f"{m['val_psnr']:.2f} dB ({gain:+.2f} over input)"
    return _format_metrics(m.get("metrics"))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def model_code_key() -> str:
    """A hash of the network code (``model/*.py``): what the cached costs were counted from."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "model").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _user_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-dgno")) / COST_CACHE.name


def _cached(size: int, key: str) -> list[dict] | None:
    for path in (COST_CACHE, _user_cache()):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key and str(size) in data["sizes"]:
                return data["sizes"][str(size)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def count_costs(size: int = 256) -> list[dict]:
    """Parameters and GMACs of every (preset, flux) pair in the table, counted with torch (slow)."""
    from ..model.complexity import preset_cost

    out = []
    for preset in PRESET_TABLE:
        for flux in FLUX_CHOICES:
            params, gmacs = preset_cost(preset, flux, size)
            out.append({"preset": preset, "flux": flux, "params": params, "gmacs": gmacs, "size": size})
    return out


def _store(path: Path, key: str, sizes: dict) -> None:
    from ..io.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"key": key, "sizes": sizes}, indent=1) + "\n", encoding="utf-8")


def preset_costs(size: int = 256) -> list[dict]:
    """The table's costs: cached for this model code, else counted and remembered per user."""
    key = model_code_key()
    cached = _cached(size, key)
    if cached is not None:
        return cached
    costs = count_costs(size)
    try:
        user = json.loads(_user_cache().read_text(encoding="utf-8"))
        sizes = user["sizes"] if user.get("key") == key else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        sizes = {}
    try:
        _store(_user_cache(), key, {**sizes, str(size): costs})
    except OSError:
        pass  # a read-only home: counted again next time, still right
    return costs


def write_cost_cache(sizes=CACHED_SIZES) -> Path:
    """Count the presets and write the shipped cache (for developers, after changing ``model/``)."""
    _store(COST_CACHE, model_code_key(), {str(s): count_costs(s) for s in sizes})
    return COST_CACHE


def run_models(args) -> int:
    from ..errors import InputError
    from ..io.catalog import list_entries, shipped_model_dir, user_model_dir

    if not 16 <= args.size <= 8192:
        raise InputError(f"--size must be between 16 and 8192 px, got {args.size}: the tile bounds")
    models = list_entries(shipped_model_dir(), user_model_dir())
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
                rows.append([m["name"], m["source"], "-", "-", "-", "-", "-", f"unreadable: {m['error']}"])
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
                    f"{m['steps']:,}" if m.get("steps") else "-",
                    _validation(m),
                ]
            )
        header = ["name", "source", "preset", "flux", "element px", "params", "steps", "validation"]
        print(_table(rows, header))
        print("steps: over every training stage; validation: PSNR on the model's own validation set")
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
