"""Puts the benchmark's headline tables into the README, between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers: the full read as
instances (section 1), the plot and the SPEC §5 verdicts, from
``bench/out/results.md``. Run by ``bench/run.sh`` after each run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def section(report: str, title: str) -> str:
    """The Markdown table of the section whose heading starts with ``title``."""
    match = re.search(rf"^## {re.escape(title)}.*?\n(\|.*?)(?:\n\n|\Z)", report, re.S | re.M)
    if match is None:
        raise SystemExit(f"readme.py: no table under '## {title}' in the report")
    return match.group(1).strip()


def block(report: str) -> str:
    header = report.splitlines()[0].lstrip("# ").strip()
    machine = re.search(r"^Machine: .*$", report, re.M)
    return "\n".join([
        START,
        f"From the run of [{header}](docs/benchmark.md). {machine.group(0) if machine else 'Machine not recorded.'}",
        "",
        "Full read of a list as model instances, warm (median ms, ×r = ratio to the plain ORM on PostgreSQL):",
        "",
        section(report, "1. Full read"),
        "",
        "![read time against list length](docs/read_vs_length.png)",
        "",
        *(["A 1,000,000-item list:", "", section(report, "8. A 1,000,000-item list"), ""]
          if "## 8. A 1,000,000-item list" in report else []),
        section(report, "SPEC §5 targets"),
        END,
    ])


def main(results: Path, readme: Path) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"readme.py: {readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + block(results.read_text()) + tail)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
