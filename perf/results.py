"""perf/RESULTS.md is shared by several benchmarks: each owns one `## <name>` section."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmark results\n\nEach section is written by the benchmark named in it; rerun that command to refresh it.\n"


def replace_section(path: Path, name: str, body: str) -> None:
    """Replaces (or appends) the section ``## name`` of ``path``, keeping the others."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
