"""Where a process's resident memory grew: two ``/proc/<pid>/smaps`` dumps, summed by mapping.

    python perf/smaps_diff.py BEFORE AFTER [--top 15]

Mappings are grouped by what backs them: a file (a shared library's code and data, a memory-mapped file), a
named region (``[heap]``, ``[stack]``), shared memory (``/dev/shm/...``), or anonymous memory (glibc's
arenas of threads other than the main one, mmapped allocations: numpy/torch buffers, JIT code), which is
split by size class, since an arena is a 64 MiB reservation and a big buffer is one mapping of its own. The
table shows Rss and Anonymous per group, and their change. chaos.py writes such dumps (``--smaps-dir``) for
every process at the end of the soak's warm-up and at its end.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
KIB = 1024


def _group(name: str, size: int) -> str:
    if not name:
        if size >= 60 << 20:
            return "[anon: >= 60 MiB (glibc thread arenas, big buffers)]"
        if size >= 1 << 20:
            return "[anon: 1-60 MiB]"
        return "[anon: < 1 MiB]"
    if name.startswith("/dev/shm/"):
        return "/dev/shm/" + re.sub(r"[0-9a-f-]{8,}", "*", name[len("/dev/shm/"):].split("/")[0])
    return name.replace(" (deleted)", "")


def parse(path: Path) -> dict[str, dict[str, int]]:
    """group -> {"Rss", "Anonymous", "Size", "count"} in bytes (count: mappings)."""
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    current: dict[str, int] | None = None
    for line in path.read_text(errors="replace").splitlines():
        m = _HEADER.match(line)
        if m:
            start, end = int(m[1], 16), int(m[2], 16)
            current = groups[_group(m[3].strip(), end - start)]
            current["Size"] += end - start
            current["count"] += 1
            continue
        key, _, rest = line.partition(":")
        if current is not None and key in ("Rss", "Anonymous"):
            current[key] += int(rest.split()[0]) * KIB
    return groups


def diff(before: Path, after: Path, top: int = 15) -> str:
    a, b = parse(before), parse(after)
    rows = []
    for name in set(a) | set(b):
        old, new = a.get(name, {}), b.get(name, {})
        rows.append((new.get("Rss", 0) - old.get("Rss", 0), name, old, new))
    rows.sort(key=lambda r: -abs(r[0]))
    total = sum(r[0] for r in rows)
    lines = [f"Rss {sum(g.get('Rss', 0) for g in a.values()) / 2**20:.1f} -> "
             f"{sum(g.get('Rss', 0) for g in b.values()) / 2**20:.1f} MiB ({total / 2**20:+.1f}); by mapping:",
             f"{'Rss change':>11} {'Rss now':>9} {'anon now':>9} {'maps':>6}  mapping"]
    for change, name, old, new in rows[:top]:
        rss, anon = new.get("Rss", 0) / 2**20, new.get("Anonymous", 0) / 2**20
        lines.append(f"{change / 2**20:+10.1f}M {rss:8.1f}M {anon:8.1f}M "
                     f"{old.get('count', 0):>3}->{new.get('count', 0):<3} {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(diff(args.before, args.after, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
