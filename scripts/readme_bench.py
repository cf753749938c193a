"""Put benchmarks/results/bench.md into the README's benchmark section (between "Test set:" and the
paragraph that reads the table), so the README always shows the committed results verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "Test set:", "**Reading it honestly.**"

bench = (ROOT / "benchmarks" / "results" / "bench.md").read_text()
body = bench[bench.index(START) :].replace("\n### ", "\n#### ").rstrip() + "\n\n"
readme = (ROOT / "README.md").read_text()
head, rest = readme.split(START, 1)
tail = rest[rest.index(END) :]
(ROOT / "README.md").write_text(head + body + tail)
print("README benchmark section updated from benchmarks/results/bench.md")
