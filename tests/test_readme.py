"""The README shows the committed bench results verbatim (``scripts/readme_bench.py`` puts them
there); a results file changed without re-running the script fails here."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_bench():
    spec = importlib.util.spec_from_file_location("readme_bench", ROOT / "scripts" / "readme_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_the_committed_bench_results():
    script = _readme_bench()
    results = ROOT / "benchmarks" / "results"
    readme = (ROOT / "README.md").read_text()
    bench = json.loads((results / "bench.json").read_text())
    assert script.render(readme, (results / "bench.md").read_text(), bench) == readme, (
        "README is out of date: run python scripts/readme_bench.py"
    )
    glance = readme.split(script.GLANCE_START, 1)[1].split(script.GLANCE_END, 1)[0]
    default = next(r for r in bench["rows"] if r["key"] == "dgno-small-face")
    assert f"{default['psnr']:.2f} ± {default['psnr_se']:.2f}" in glance


def test_a_changed_result_shows_in_both_places():
    script = _readme_bench()
    results = ROOT / "benchmarks" / "results"
    readme = (ROOT / "README.md").read_text()
    bench_md = (results / "bench.md").read_text()
    bench = json.loads((results / "bench.json").read_text())
    default = next(r for r in bench["rows"] if r["key"] == "dgno-small-face")
    default["psnr"] += 1.0
    changed = script.render(
        readme, bench_md.replace("| DGNO-small, face flux |", "| DGNO-small, face flux (x) |"), bench
    )
    assert changed != readme and "DGNO-small, face flux (x)" in changed
    assert f"{default['psnr']:.2f} ± " in changed.split(script.GLANCE_END, 1)[0]
