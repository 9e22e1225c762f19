"""Bad Range requests vs the shim's descriptors (issue 20.1's target): ``make range-soak`` -> perf/RESULTS.md
"Bad Range soak".

    python perf/range_fd_soak.py [--requests 50000] [--concurrency 8] [--sample-every 5000]

Starts ``python -m openai_frontend`` alone (the Files API and its embedded store need no tritonserver: it is
pointed at the discard port) on a free loopback port in a temporary directory, uploads one small clip, then sends
``--requests`` ``GET /v1/files/<id>/content`` over one keep-alive httpx client, ``--concurrency`` at a time, each
with one of a cycle of invalid ranges (ignored: 200 and the whole file, RFC 9110 14.2) and unsatisfiable ones (416
with ``Content-Range: bytes */N``). Every ``--sample-every`` requests the load pauses (nothing in flight; once
no blob is open, at most 5 s: the client can hold an answer a moment before the shim closes its blob) and the
shim's open descriptors (``/proc/<pid>/fd``, and how many of them are the store's blobs) and RSS are sampled.

Fails (exit 1) when the descriptors grow by more than ``--fd-slack`` from the first sample after the warm-up,
a blob stays open 5 s after the answers, any answer is a 5xx or a transport error, or an answer is not what RFC 9110 says
for its header. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import replace_section  # noqa: E402
from tests.videos import ClipSpec, make_video  # noqa: E402
from video_pipeline.launch import free_port  # noqa: E402

logger = logging.getLogger("range_fd_soak")
SECTION = "Bad Range soak"
MIB = 1024 * 1024

#: Range headers and what RFC 9110 says a server answers to them for a file shorter than 99,999 bytes:
#: an invalid ranges-specifier (or another unit, or too many ranges) is ignored (200, the whole body);
#: a valid one none of whose ranges starts inside the body is a 416.
RANGES: list[tuple[str, int]] = [
    ("bytes=10-5", 200),             # last < first: invalid
    ("bytes=99999-", 416),           # starts past the end
    ("bytes=abc", 200),
    ("bytes=99999-100000", 416),
    ("bytes=-", 200),                # neither bound
    ("bytes=-0", 416),               # an empty suffix
    ("bytes=5-4,0-1", 200),          # one bad range-spec invalidates the header
    ("items=0-1", 200),              # another unit
    ("bytes=" + ",".join(["0-0"] * 101), 200),  # more ranges than the server reads
]


@dataclass
class Sample:
    done: int
    seconds: float
    fds: int
    blob_fds: int
    rss: int


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)  # (header, status) -> count
    wrong: list[str] = field(default_factory=list)  # the first few unexpected answers
    wrong_count: int = 0
    transport_errors: Counter = field(default_factory=Counter)

    def bad(self, what: str) -> None:
        self.wrong_count += 1
        if len(self.wrong) < 10:
            self.wrong.append(what)


# --- the shim -------------------------------------------------------------------------------------------------


def start_shim(work: Path, port: int) -> subprocess.Popen:
    """The shim on ``port`` with its store under ``work/files``; returns once /health answers."""
    env = {**os.environ, "VLT_FILES_DIR": str(work / "files"), "VLT_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1"}
    env.pop("VLT_TRITON_URL", None)
    cmd = [sys.executable, "-m", "openai_frontend", "--triton-url", "127.0.0.1:9", "--host", "127.0.0.1",
           "--port", str(port)]
    with open(work / "shim.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the shim exited with {proc.returncode}:\n{log_tail(work)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        if time.monotonic() > deadline:
            stop_shim(proc)
            raise RuntimeError(f"the shim did not answer /health in 120 s:\n{log_tail(work)}")
        time.sleep(0.1)


def stop_shim(proc: subprocess.Popen) -> None:
    """SIGTERM its process group, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def log_tail(work: Path, chars: int = 4000) -> str:
    log = work / "shim.log"
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def settled(pid: int, blobs: Path, done: int, began: float, timeout_s: float = 5.0) -> Sample:
    """:func:`sample` once no blob is open, or after ``timeout_s`` (a leak): the client can hold a whole answer
    a moment before the shim's task closes the blob after sending it."""
    deadline = time.monotonic() + timeout_s
    while (s := sample(pid, blobs, done, began)).blob_fds and time.monotonic() < deadline:
        time.sleep(0.05)
    return s


def sample(pid: int, blobs: Path, done: int, began: float) -> Sample:
    """The shim's open descriptors (and those that are the store's blobs) and its RSS, now."""
    fds = blob_fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed between the listing and the readlink
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            fds += 1
            blob_fds += target.startswith(str(blobs))
    return Sample(done, time.monotonic() - began, fds, blob_fds, psutil.Process(pid).memory_info().rss)


# --- the load -------------------------------------------------------------------------------------------------


async def send(client: httpx.AsyncClient, url: str, headers: itertools.cycle, count: int, concurrency: int,
               size: int, tally: Tally) -> None:
    """``count`` requests, ``concurrency`` at a time, each with the next header of the cycle; returns when all
    are answered (so the caller samples an idle shim)."""
    jobs = [next(headers) for _ in range(count)]
    it = iter(jobs)

    async def worker() -> None:
        for header, expected in it:
            try:
                r = await client.get(url, headers={"Range": header})
            except httpx.HTTPError as exc:
                tally.transport_errors[type(exc).__name__] += 1
                continue
            tally.statuses[(header, r.status_code)] += 1
            if r.status_code != expected:
                tally.bad(f"{header[:40]}: {r.status_code} (expected {expected}) {r.text[:200]}")
            elif expected == 200 and len(r.content) != size:
                tally.bad(f"{header[:40]}: 200 with {len(r.content)} bytes, not the whole {size}")
            elif expected == 416 and (r.headers.get("content-range") != f"bytes */{size}"
                                      or r.json().get("error", {}).get("code") != "range_not_satisfiable"):
                tally.bad(f"{header[:40]}: 416 without Content-Range bytes */{size} or an OpenAI error: "
                          f"{r.headers.get('content-range')} {r.text[:200]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def soak(base_url: str, pid: int, blobs: Path, args: argparse.Namespace) -> tuple[list[Sample], Tally, int]:
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    if len(clip) >= 99999:
        raise RuntimeError(f"the clip is {len(clip)} bytes; the unsatisfiable ranges need it under 99,999")
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        r = await client.post("/v1/files", files={"file": ("clip.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
        r.raise_for_status()
        url = f"/v1/files/{r.json()['id']}/content"
        headers = itertools.cycle(RANGES)
        # Warm up: every connection of the pool open, the thread pool started, every header seen once.
        await send(client, url, headers, max(args.warmup, len(RANGES)), args.concurrency, len(clip), Tally())
        began = time.monotonic()
        samples, tally, done = [settled(pid, blobs, 0, began)], Tally(), 0
        while done < args.requests:
            batch = min(args.sample_every, args.requests - done)
            await send(client, url, headers, batch, args.concurrency, len(clip), tally)
            done += batch
            samples.append(settled(pid, blobs, done, began))
            last = samples[-1]
            logger.info("%6d requests, %5.0f s: %d descriptors (%d blobs), RSS %.1f MiB", done, last.seconds,
                        last.fds, last.blob_fds, last.rss / MIB)
    return samples, tally, len(clip)


# --- the report -----------------------------------------------------------------------------------------------


def report(samples: list[Sample], tally: Tally, size: int, args: argparse.Namespace, load: tuple[str, str],
           verdict: str) -> str:
    first, last = samples[0], samples[-1]
    total = sum(tally.statuses.values()) + sum(tally.transport_errors.values())
    by_status = Counter()
    for (_header, status), n in tally.statuses.items():
        by_status[status] += n
    fivexx = sum(n for status, n in by_status.items() if status >= 500)
    lines = [
        f"Run {time.strftime('%Y-%m-%d')} with `make range-soak` (`python perf/range_fd_soak.py --requests "
        f"{args.requests} --concurrency {args.concurrency} --sample-every {args.sample_every}`) on "
        f"{os.cpu_count()} cores, shared: load average (1/5/15 min) {load[0]} before, {load[1]} after. The shim "
        "alone (`python -m openai_frontend --triton-url 127.0.0.1:9`: the Files API needs no tritonserver), its "
        f"embedded store in a temporary directory, one {size}-byte clip uploaded, then `GET /v1/files/<id>/content` "
        f"over one keep-alive httpx client, {args.concurrency} in flight, cycling through {len(RANGES)} invalid and "
        "unsatisfiable Range headers; the load pauses for each sample, so nothing is in flight when the shim's "
        "`/proc/<pid>/fd` and RSS are read (once no blob is open: the client can hold an answer a moment before "
        "the shim closes its blob; at most 5 s, longer is a leak).",
        "",
        f"**{verdict}**: {total} requests in {last.seconds:.0f} s ({total / max(last.seconds, 1e-9):.0f}/s); "
        f"statuses {', '.join(f'{s}: {n}' for s, n in sorted(by_status.items()))}; 5xx: {fivexx}; transport errors: "
        f"{sum(tally.transport_errors.values())}; answers not as RFC 9110 says: {tally.wrong_count}; descriptors "
        f"{first.fds} -> {last.fds} ({last.fds - first.fds:+d}, slack {args.fd_slack}), blobs still open 5 s "
        f"after the answers: at most {max(s.blob_fds for s in samples)}; RSS {first.rss / MIB:.1f} -> {last.rss / MIB:.1f} MiB.",
        "",
        "| requests | seconds | open descriptors | of them blobs | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {s.done} | {s.seconds:.0f} | {s.fds} | {s.blob_fds} | {s.rss / MIB:.1f} |" for s in samples]
    lines += ["", "| Range | expected | answered |", "|---|---:|---|"]
    for header, expected in RANGES:
        got = ", ".join(f"{status}: {n}" for (h, status), n in sorted(tally.statuses.items()) if h == header)
        shown = header if len(header) <= 40 else f"bytes=0-0,... ({header.count(',') + 1} ranges)"
        lines.append(f"| `{shown}` | {expected} | {got} |")
    if tally.transport_errors:
        lines += ["", "Transport errors: " + ", ".join(f"{k}: {n}" for k, n in tally.transport_errors.items())]
    if tally.wrong:
        lines += ["", "First unexpected answers:", ""] + [f"- `{w}`" for w in tally.wrong]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sample-every", type=int, default=5000, help="requests between descriptor/RSS samples")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the first sample")
    parser.add_argument("--fd-slack", type=int, default=2, help="descriptor growth tolerated (a reconnect's socket)")
    parser.add_argument("--out", default=str(ROOT / "perf" / "RESULTS.md"), help="'' to write nothing")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the shim's log)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    work = Path(tempfile.mkdtemp(prefix="vlt-range-soak-"))
    port = free_port()
    proc = start_shim(work, port)
    try:
        samples, tally, size = asyncio.run(soak(f"http://127.0.0.1:{port}", proc.pid, work / "files" / "blobs", args))
        alive = proc.poll() is None
    finally:
        stop_shim(proc)
        if args.keep:
            logger.info("work directory kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    growth = samples[-1].fds - samples[0].fds
    fivexx = sum(n for (_h, status), n in tally.statuses.items() if status >= 500)
    failures = [what for what, bad in [
        (f"descriptors grew by {growth}", growth > args.fd_slack),
        ("a blob stayed open 5 s after its answer", any(s.blob_fds for s in samples)),
        (f"{fivexx} 5xx", fivexx > 0),
        (f"{sum(tally.transport_errors.values())} transport errors", bool(tally.transport_errors)),
        (f"{tally.wrong_count} answers not as RFC 9110 says", tally.wrong_count > 0),
        ("the shim exited", not alive),
    ] if bad]
    ok = not failures
    verdict = "pass" if ok else "FAIL: " + "; ".join(failures)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = report(samples, tally, size, args, (load_before, load_after), verdict)
    print(text)
    if args.out:
        replace_section(Path(args.out), SECTION, text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
