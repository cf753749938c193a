"""Put the committed bench results into the README, so it always shows them verbatim:

- ``benchmarks/results/bench.md`` into the benchmark section (between "Test set:" and the paragraph
  that reads the table);
- a short summary of ``bench.json`` (the rows a biologist compares) between the ``<!-- glance -->``
  markers near the top.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION, START, END = "### Benchmark", "Test set:", "**Reading it honestly.**"
GLANCE_START, GLANCE_END = "<!-- glance -->", "<!-- /glance -->"
# (row key in bench.json, how the summary names it)
GLANCE_ROWS = (
    ("input", "Blurred input"),
    ("wiener", "Wiener deconvolution (given the true optics)"),
    ("rltv", "Richardson–Lucy + total variation (given the true optics)"),
    ("nafnet-20k", "NAFNet-style CNN, same size and steps as DGNO"),
    ("dgno-small-face", "**DGNO, the shipped default**"),
)


def glance(bench: dict) -> str:
    """A five-row table: PSNR and SSIM (mean ± s.e. over the test images) and the gain over input."""
    rows = {r["key"]: r for r in bench["rows"] if r.get("psnr") is not None}
    base = rows["input"]["psnr"]
    n = sum(bench["meta"]["test_set"]["sources"].values())
    lines = [
        f"On the test set, {n} simulated images under unseen microscopes, never used to train or choose "
        '("Benchmark" below has every row, per source, and the commands that reproduce it):',
        "",
        "| method | PSNR (dB) | SSIM | gain over the input (dB) |",
        "|---|---|---|---|",
    ]
    for key, name in GLANCE_ROWS:
        if key not in rows:
            continue
        r = rows[key]
        gain = "—" if key == "input" else f"{r['psnr'] - base:+.2f}"
        lines.append(f"| {name} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | {r['ssim']:.3f} | {gain} |")
    return "\n".join(lines) + "\n\n"


def render(readme: str, bench_md: str, bench: dict) -> str:
    """The README with both places filled from the results (running it twice changes nothing)."""
    body = bench_md[bench_md.index(START) :].replace("\n### ", "\n#### ").rstrip() + "\n\n"
    section = readme.index(SECTION)
    start = readme.index(START, section)
    readme = readme[:start] + body + readme[readme.index(END, start) :]
    top, rest = readme.split(GLANCE_START, 1)
    return top + GLANCE_START + "\n\n" + glance(bench) + rest[rest.index(GLANCE_END) :]


def main() -> None:
    results = ROOT / "benchmarks" / "results"
    readme = ROOT / "README.md"
    bench = json.loads((results / "bench.json").read_text())
    readme.write_text(render(readme.read_text(), (results / "bench.md").read_text(), bench))
    print("README benchmark section and summary updated from benchmarks/results/bench.{md,json}")


if __name__ == "__main__":
    main()
