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


def machine_load() -> str:
    """What `uptime` prints (load averages), written beside a benchmark's numbers."""
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def publish(name: str, body: str, write: bool = True) -> None:
    """Prints a benchmark's section and, unless ``write`` is false (--no-write), puts it in perf/RESULTS.md."""
    print(body)
    if write:
        replace_section(Path(__file__).resolve().parent / "RESULTS.md", name, body)
