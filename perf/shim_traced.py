"""The shim under tracemalloc, for leak hunts (issue 19.4's soak): ``python -m openai_frontend`` unchanged, plus a
thread that every few seconds dumps a tracemalloc snapshot and one line of memory facts.

    python perf/shim_traced.py --trace-dir DIR [--trace-every-s 30] [--trace-frames 6] [--malloc-trim] -- SHIM ARGS
    python perf/shim_traced.py --compare DIR [--base N] [--top 25]

The first form runs the shim (``SHIM ARGS`` as ``python -m openai_frontend`` takes them; the shim starts its
tritonserver as usual) and writes into ``DIR``: ``snap-<seconds>.tracemalloc`` (``tracemalloc.Snapshot.dump``) and
``memory.tsv``, one row per dump: seconds since start, RSS, USS (``/proc/self/smaps_rollup``), Python memory
tracemalloc traces, glibc's heap (``mallinfo2``: in use, free inside the arenas, mmapped), threads, asyncio tasks,
gc objects, and the ten object types that grew most since the first dump. ``--malloc-trim`` calls
``malloc_trim(0)`` before each row (RSS that then drops was free heap glibc had kept, not a leak).

The second form prints what grew between snapshot ``--base`` (default: the second, i.e. after the first interval
of load) and the last one, grouped by the allocating line and by traceback, with the memory.tsv rows. chaos.py
runs its soak's shim through this with ``--trace-shim DIR``. Tracing costs CPU (a snapshot holds the GIL for up to
a few seconds with a big heap), so latencies of a traced run are not the soak's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("seconds", "rss_mib", "uss_mib", "traced_mib", "heap_used_mib", "heap_free_mib", "heap_mmap_mib",
           "threads", "asyncio_tasks", "gc_objects", "top_type_growth")
MIB = 1024 * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        return libc
    return None


def rollup(pid: int | str = "self") -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes (Rss, Pss, Private_Clean, Private_Dirty, Anonymous, Pss_Shmem...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


def _types() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _row(started: float, libc: ctypes.CDLL | None, first_types: Counter, trim: bool) -> list[str]:
    if trim and libc is not None:
        libc.malloc_trim(0)
    mem = rollup()
    heap = libc.mallinfo2() if libc is not None else None
    types = _types()
    growth = sorted(((types[k] - first_types.get(k, 0), k) for k in types), reverse=True)[:10]
    traced, _peak = tracemalloc.get_traced_memory()
    return [f"{time.monotonic() - started:.0f}", f"{mem.get('Rss', 0) / MIB:.1f}",
            f"{(mem.get('Private_Clean', 0) + mem.get('Private_Dirty', 0)) / MIB:.1f}", f"{traced / MIB:.1f}",
            f"{heap.uordblks / MIB:.1f}" if heap else "", f"{heap.fordblks / MIB:.1f}" if heap else "",
            f"{heap.hblkhd / MIB:.1f}" if heap else "", str(threading.active_count()),
            str(len(asyncio.tasks._all_tasks)), str(sum(types.values())),  # noqa: SLF001 - a WeakSet of live tasks
            " ".join(f"{k}:{n:+d}" for n, k in growth if n > 0)]


def _dumper(out: Path, every_s: float, trim: bool) -> None:
    libc = _libc()
    started = time.monotonic()
    first_types = _types()
    with open(out / "memory.tsv", "w") as tsv:
        tsv.write("\t".join(COLUMNS) + "\n")
        while True:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            snap.dump(str(out / f"snap-{time.monotonic() - started:06.0f}.tracemalloc"))
            del snap
            tsv.write("\t".join(_row(started, libc, first_types, trim)) + "\n")
            tsv.flush()
            time.sleep(every_s)


def run(args: argparse.Namespace, shim_args: list[str]) -> int:
    out = Path(args.trace_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(args.trace_frames)
    threading.Thread(target=_dumper, args=(out, args.trace_every_s, args.malloc_trim), name="tracemalloc-dumper",
                     daemon=True).start()
    sys.path.insert(0, str(ROOT))
    from openai_frontend.__main__ import main

    return main(shim_args)


def compare(args: argparse.Namespace) -> int:
    folder = Path(args.compare)
    snaps = sorted(folder.glob("snap-*.tracemalloc"))
    if len(snaps) < 2:
        print(f"{len(snaps)} snapshot(s) in {folder}: nothing to compare")
        return 1
    base_path = snaps[min(args.base, len(snaps) - 2)]
    base, last = tracemalloc.Snapshot.load(str(base_path)), tracemalloc.Snapshot.load(str(snaps[-1]))
    tsv = folder / "memory.tsv"
    if tsv.exists():
        print(tsv.read_text())
    total = sum(s.size for s in last.statistics("filename")) - sum(s.size for s in base.statistics("filename"))
    print(f"traced memory {base_path.name} -> {snaps[-1].name}: {total / MIB:+.2f} MiB")
    for key in ("lineno", "traceback"):
        print(f"\n--- grown most, by {key} ---")
        for stat in last.compare_to(base, key)[:args.top]:
            if stat.size_diff <= 0:
                continue
            print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  now {stat.size / 1024:10.1f} KiB")
            frames = stat.traceback.format(limit=args.frames if key == "traceback" else 1)
            print("\n".join("    " + line.strip() for line in frames if line.strip()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    shim_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, shim_args = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace-dir", help="where the snapshots and memory.tsv go (runs the shim)")
    parser.add_argument("--trace-every-s", type=float, default=30.0)
    parser.add_argument("--trace-frames", type=int, default=6, help="frames kept per allocation")
    parser.add_argument("--malloc-trim", action="store_true", help="malloc_trim(0) before each memory.tsv row")
    parser.add_argument("--compare", help="a --trace-dir to read: what grew")
    parser.add_argument("--base", type=int, default=1, help="index of the snapshot to compare the last with")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=6, help="frames shown per traceback")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args)
    if not args.trace_dir:
        parser.error("--trace-dir or --compare")
    return run(args, shim_args)


if __name__ == "__main__":
    sys.exit(main())
