"""The package's layers (README, Development): a module imports only from its own layer or below.

Why a test: an import from a low layer up to a high one (io/ reaching into inference/, physics/ into
inference/) is how a library quietly turns into a knot; this catches the first one.
"""

import ast
from pathlib import Path

import napari_dgno

ROOT = Path(napari_dgno.__file__).parent
LAYERS = {  # top-level module or package -> layer (higher may import lower, never the reverse)
    "errors": 0, "options": 0, "normalize": 0, "devices": 0, "tiling": 0, "metrics": 0, "memory": 0,
    "model": 1,
    "io": 2, "physics": 2, "data": 2,
    "registry": 3,
    "inference": 4, "train": 4,
    "overlays": 5, "batch": 5, "samples": 5, "bench": 5,
    "widgets": 6, "cli": 6,
}  # fmt: skip
ROOT_CONSTANTS = {"__version__"}  # the package root's plain values may be imported from anywhere


def _imports(path: Path):
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("napari_dgno")):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield module, target if node.module else f"{target}.{alias.name}", alias.name


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_is_in_a_layer():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")}
    assert tops - {"__init__"} <= set(LAYERS), sorted(tops - {"__init__"} - set(LAYERS))


def test_no_import_reaches_up_a_layer():
    upward = []
    for path in ROOT.rglob("*.py"):
        if path == ROOT / "__init__.py":
            continue  # the package's lazy public API sits on top of everything
        for module, target, name in _imports(path):
            if name in ROOT_CONSTANTS and target in ("napari_dgno", f"napari_dgno.{name}"):
                continue
            here, there = _layer(module), _layer(target)
            if there is None or (here is not None and there > here):
                upward.append(f"{module} -> {target}")
    assert not upward, upward
