"""Fault tests and a soak on the real stack (issue 19.4): ``make chaos`` -> perf/RESULTS.md "Faults and soak".

Starts its own ``python -m openai_frontend`` (which starts and supervises tritonserver) on free loopback ports
with the tiny model, in a temporary directory, and runs, in this order:

1. kill -9 of tritonserver mid-request: the in-flight client's answer, /health/ready, the launcher's restart,
   chat again on the same shim; recovery time from the kill to ready.
2. client disconnect mid-stream of a long generation: time from the client's close to the llm's abort log line.
3. a files dir on a small tmpfs (root only) that fills mid-upload, on a second shim joining the same tritonserver.
4. kill -9 of the shim during a large upload, restart on the same files dir: nothing partial listed, every
   earlier file intact by sha256.
5. a soak: mixed requests at a concurrency with a share of bad inputs from the bad-input corpus; 5xx, latency,
   unanswered /health checks, and the memory of every process (the shim, tritonserver, each Python stub by its
   model instance, vLLM's EngineCore and Worker): RSS/PSS/USS/shared/anonymous from /proc/<pid>/smaps_rollup every
   --sample-s, before the load, after --soak-warmup-s of it, at its end, and the slope after the warm-up; with gdb,
   glibc's malloc_trim(0) in each process at the warm-up and after the load, so the growth of memory in use is
   told apart from free heap the allocator keeps. --smaps-dir: full smaps at both points, diffed by mapping
   (perf/smaps_diff.py); --trace-shim: the shim under tracemalloc (perf/shim_traced.py).

Everything it started is stopped by process group at the end, the tmpfs unmounted. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import logging
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import proc_label, replace_section  # noqa: E402
from perf.shim_traced import rollup  # noqa: E402
from tests.videos import ClipSpec, make_frame, make_video  # noqa: E402
from video_pipeline.cache import SERVER_DIR_PREFIX  # noqa: E402
from video_pipeline.launch import free_port, group_members  # noqa: E402

logger = logging.getLogger("chaos")
MODEL = "tiny-qwen2-vl"
MODELS = "video_decoder,video_preprocessor,video_media,llm"  # what /health/ready and chat need
SMALL = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}}
LONG = {"max_tokens": 3000, "temperature": 0, "ignore_eos": True}


# --- processes ------------------------------------------------------------------------------------------------


class Shim:
    """``python -m openai_frontend`` in its own process group; with ``triton_url`` empty it starts tritonserver."""

    def __init__(self, name: str, work: Path, files_dir: Path, triton_url: str = "", trace_dir: str = "") -> None:
        self.name, self.work, self.files_dir, self.triton_url = name, work, files_dir, triton_url
        self.trace_dir = trace_dir  # non-empty: run under perf/shim_traced.py (tracemalloc snapshots there)
        self.log = work / f"{name}.log"
        self.triton_log = work / f"{name}-tritonserver.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 900) -> float:
        """Starts the shim, returns the seconds to /health/ready 200."""
        self.port = free_port()
        env = {**os.environ, "VLT_TRITON_MODELS": MODELS, "VLT_FILES_DIR": str(self.files_dir),
               "VLT_TRITON_LOG_FILE": str(self.triton_log), "VLT_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1",
               "VLLM_CACHE_ROOT": str(ROOT / ".cache" / "vllm"), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        env.pop("VLT_TRITON_URL", None)
        cmd = [sys.executable, "-m", "openai_frontend"]
        if self.trace_dir:
            cmd = [sys.executable, str(ROOT / "perf" / "shim_traced.py"), "--trace-dir", self.trace_dir,
                   "--trace-every-s", os.environ.get("CHAOS_TRACE_EVERY_S", "60"), "--"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.triton_url:
            cmd += ["--triton-url", self.triton_url]
        started = time.monotonic()
        with open(self.log, "ab") as out:
            out.write(f"--- {self.name}: starting on port {self.port} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         start_new_session=True)
        until(lambda: self.ready() or self.proc.poll() is not None, timeout_s, f"{self.name} ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        return time.monotonic() - started

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tritonserver(self) -> psutil.Process:
        (proc,) = [p for p in psutil.Process(self.proc.pid).children() if p.name() == "tritonserver"]
        return proc

    def grpc_url(self) -> str:
        port = next(a.split("=", 1)[1] for a in self.tritonserver().cmdline() if a.startswith("--grpc-port="))
        return f"127.0.0.1:{port}"

    def kill(self) -> None:
        """SIGKILL the shim's process group (tritonserver, in its own session, dies with it: PDEATHSIG)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (graceful: the shim stops its tritonserver), then SIGKILL the group's leftovers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        self.kill()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def triton_log_text(self) -> str:
        return self.triton_log.read_text(errors="replace") if self.triton_log.exists() else ""


def until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return value


def reap_sessions(sids: list[int]) -> None:
    """SIGKILL whatever is left in the sessions (process groups) this script started."""
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) in sids and proc.pid != os.getpid():
                proc.kill()


# --- media and requests -----------------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def padded(clip: bytes, size: int) -> bytes:
    """A valid mp4 of about ``size`` bytes: ``clip`` then a ``free`` box of random bytes (new sha256 each time)."""
    pad = max(0, size - len(clip) - 8)
    return clip + struct.pack(">I4s", pad + 8, b"free") + os.urandom(pad)


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(*parts: dict, **extra: Any) -> dict:
    content: Any = [*parts, {"type": "text", "text": "What happens in the video?"}] if parts else "Hello there"
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0,
            **extra}


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def jpeg_frames(n: int = 6) -> str:
    from PIL import Image

    frames = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(make_frame(i, 120, 160)).save(buf, format="JPEG")
        frames.append(base64.b64encode(buf.getvalue()).decode())
    return "data:video/jpeg;base64," + ",".join(frames)


class CutOff(io.BytesIO):
    """An upload body that calls ``at()`` once, when the client has read ``fraction`` of it."""

    def __init__(self, data: bytes, at: Callable[[], None], fraction: float = 0.5) -> None:
        super().__init__(data)
        self._mark, self._at = int(len(data) * fraction), at

    def read(self, size: int | None = -1) -> bytes:
        if self._at is not None and self.tell() >= self._mark:
            self._at, at = None, self._at
            at()
        return super().read(size)


def upload(client: httpx.Client, body: Any, name: str = "clip.mp4") -> httpx.Response:
    return client.post("/v1/files", files={"file": (name, body, "video/mp4")}, data={"purpose": "vision"})


def error_of(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        return f"{err.get('code')}: {err.get('message')}"
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


# --- the cases ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    result: str
    ok: bool
    ci: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)  # markdown after the notes (the soak's memory tables)

    def add(self, case: str, result: str, ok: bool, ci: str) -> None:
        logger.info("%s %s: %s", "PASS" if ok else "FAIL", case, result)
        self.rows.append(Row(case, result, ok, ci))


def case_kill_tritonserver(shim: Shim, report: Report) -> None:
    client = httpx.Client(base_url=shim.url, timeout=120)
    answers: dict[str, Any] = {}

    def long_request() -> None:
        try:
            answers["plain"] = client.post("/v1/chat/completions", json=chat_body(**LONG))
        except httpx.HTTPError as exc:
            answers["plain"] = exc

    def long_stream() -> None:
        events = []
        try:
            with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, **LONG)) as r:
                answers["stream_status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if len(events) == 3:
                            started_stream.set()
        except httpx.HTTPError as exc:
            events.append(f"transport error {exc!r}")
        answers["stream_last"] = events[-2:] if events else []

    started_stream = threading.Event()
    shim_pid, triton = shim.proc.pid, shim.tritonserver()
    threads = [threading.Thread(target=long_request), threading.Thread(target=long_stream)]
    for t in threads:
        t.start()
    started_stream.wait(60)
    time.sleep(0.5)  # the plain request is generating too
    killed = time.monotonic()
    triton.kill()
    unready = until(lambda: not shim.ready(), 30, "unready", every_s=0.02) and time.monotonic() - killed
    for t in threads:
        t.join(120)
    back = until(shim.ready, 600, "ready again", every_s=0.1) and time.monotonic() - killed
    r = client.post("/v1/chat/completions", json=chat_body())
    plain = answers.get("plain")
    plain_s = (f"{plain.status_code} {error_of(plain)}" if isinstance(plain, httpx.Response) else repr(plain))
    ok = (isinstance(plain, httpx.Response) and plain.status_code == 503 and "riton" in plain.text
          and "error" in plain.json() and r.status_code == 200 and shim.proc.pid == shim_pid
          and shim.proc.poll() is None and shim.tritonserver().pid != triton.pid)
    stream_s = " | ".join(answers.get("stream_last", []))[:300]
    report.add("1. kill -9 tritonserver mid-request",
               f"in-flight request: {plain_s[:200]}; in-flight stream (200 already sent): last events `{stream_s}`; "
               f"/health/ready 503 {unready:.2f} s after the kill; ready again {back:.1f} s after it "
               f"(restart by the launcher); chat then {r.status_code}; same shim pid {shim_pid}",
               ok, "tests/e2e/test_launcher_supervision_e2e.py (kill -9, unready, restart, chat; no in-flight "
               "request)")


def case_disconnect(shim: Shim, report: Report, attempts: int = 3) -> None:
    """Close -> the engine request's end in tritonserver's log: the llm's abort lines, or (when the generation had
    already run to its end before the close reached it) its "done" line, reported apart."""
    results: list[str] = []
    worst = 0.0
    client = httpx.Client(base_url=shim.url, timeout=120)
    client.post("/v1/chat/completions", json=chat_body())  # a warm engine: the first tokens come at once
    for attempt in range(attempts):
        header_id = f"chaos-disconnect-{attempt}-{time.monotonic_ns()}"
        opened = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, **LONG),
                           headers={"X-Request-Id": header_id}) as r:
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
        closed = time.monotonic()  # leaving the block closes the connection mid-stream
        pattern = re.compile(rf"request ({re.escape(header_id)}\.[0-9a-f]+) ended early")
        rid = until(lambda p=pattern: p.search(shim.log_tail(200000)), 30, "the shim's cancel", every_s=0.01)[1]

        def ended(rid: str = rid) -> str:
            text = shim.triton_log_text()[-400000:]
            if (f"request {rid} cancelled by the client: aborted in the engine" in text
                    or f"abort request for {rid}: 1 running request(s) stopped" in text):
                return "aborted"
            return "had already finished" if f"llm: request {rid} done" in text else ""

        try:
            how = until(ended, 15, "the engine's abort", every_s=0.01)
            took = time.monotonic() - closed
            results.append(f"{took * 1000:.0f} ms ({how}; 3 events after {(closed - opened) * 1000:.0f} ms)")
            worst = max(worst, took)
        except TimeoutError:
            results.append("no abort within 15 s")
            worst = float("inf")
    ok = worst < 1.0
    report.add("2. client disconnect mid-stream (3000-token generation)",
               f"close -> llm's abort log line, {attempts} attempts: {'; '.join(results)} (vLLM's metrics are not "
               "exported by the llm model; measured from tritonserver's log, polled every 10 ms)",
               ok, "tests/e2e/test_openai_chat.py + test_shim_media_in_llm.py (disconnect, < 1 s for a video)")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def case_full_disk(shim: Shim, work: Path, report: Report, clip: bytes) -> None:
    ci = "tests/frontend/test_files_full_disk.py (2 MiB tmpfs + injected ENOSPC, in-process)"
    with tmpfs(work / "tmpfs", "64m") as mounted:
        if not mounted:
            report.add("3. files dir on a 64 MiB tmpfs fills mid-upload", "skipped: cannot mount a tmpfs (not root)",
                       True, ci)
            return
        small = Shim("shim-tmpfs", work, work / "tmpfs" / "files", triton_url=shim.grpc_url())
        try:
            small.start(120)
            client = httpx.Client(base_url=small.url, timeout=120)
            kept = {}
            for _ in range(3):
                body = padded(clip, 10 * 1024 * 1024)
                r = upload(client, body)
                assert r.status_code == 200, r.text
                kept[r.json()["id"]] = sha(body)
            r = upload(client, padded(clip, 80 * 1024 * 1024))
            listed = {f["id"] for f in client.get("/v1/files").json()["data"]}
            intact = all(sha(client.get(f"/v1/files/{fid}/content").content) == digest for fid, digest in kept.items())
            staged = [p.name for p in (work / "tmpfs" / "files" / "tmp").glob("*")] \
                if (work / "tmpfs" / "files" / "tmp").is_dir() else []
            health = httpx.get(f"{small.url}/health", timeout=2).status_code
            after = upload(client, padded(clip, 1024 * 1024))
            ok = (r.status_code in (413, 507) and "message" in r.json().get("error", {}) and listed == set(kept)
                  and intact and not staged and health == 200 and after.status_code == 200)
            report.add("3. files dir on a 64 MiB tmpfs fills mid-upload",
                       f"3 x 10 MB kept, then 80 MB: {r.status_code} `{error_of(r)[:160]}`; listed: the 3 earlier "
                       f"files only ({len(listed)}), sha256 intact: {intact}, staging files left: {len(staged)}; "
                       f"/health {health}; a 1 MB upload after: {after.status_code}", ok, ci)
        finally:
            small.stop()


def case_kill_shim_mid_upload(shim: Shim, report: Report, clip: bytes, size_mb: int) -> None:
    client = httpx.Client(base_url=shim.url, timeout=600)
    earlier = {}
    for size in (64 * 1024, 5 * 1024 * 1024, 20 * 1024 * 1024):
        body = padded(clip, size)
        r = upload(client, body)
        assert r.status_code == 200, r.text
        earlier[r.json()["id"]] = sha(body)
    before = {f["id"] for f in client.get("/v1/files").json()["data"]}
    big = padded(clip, size_mb * 1024 * 1024)
    triton_pgid = shim.tritonserver().pid  # tritonserver leads a process group of its own (its stubs, vLLM's EngineCore)
    try:
        upload(client, CutOff(big, shim.kill), name="big.mp4")
        cut = "the upload answered before the kill"
    except httpx.HTTPError as exc:
        cut = f"client saw {type(exc).__name__}"
    staged = list((shim.files_dir / "tmp").glob("*")) if (shim.files_dir / "tmp").is_dir() else []
    # tritonserver gets SIGTERM (PDEATHSIG) and exits within its --exit-timeout-secs (20): its session should end.
    with contextlib.suppress(TimeoutError):
        until(lambda: not group_members(triton_pgid), 30, "tritonserver's process group to end", every_s=0.5)
    orphans = []
    for pid in group_members(triton_pgid):
        with contextlib.suppress(psutil.Error):
            orphans.append(f"{pid} {psutil.Process(pid).name()}")
    for pid in group_members(triton_pgid):  # reaped here, else they hold memory for the rest of the run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    restart_s = shim.start()
    client = httpx.Client(base_url=shim.url, timeout=600)
    after = {f["id"]: f["bytes"] for f in client.get("/v1/files").json()["data"]}
    intact = all(sha(client.get(f"/v1/files/{fid}/content").content) == digest for fid, digest in earlier.items())
    staged_after = list((shim.files_dir / "tmp").glob("*")) if (shim.files_dir / "tmp").is_dir() else []
    started = time.monotonic()
    again = upload(client, big, name="big.mp4")
    whole_s = time.monotonic() - started
    whole = again.status_code == 200 and sha(client.get(f"/v1/files/{again.json()['id']}/content").content) == sha(big)
    ok = set(after) == before and intact and whole and cut != "the upload answered before the kill" and not orphans
    report.add(f"4. kill -9 of the shim mid-upload ({size_mb} MB, killed at half)",
               f"{cut}; processes of its tritonserver left 30 s after the kill: {orphans or 'none'}; staging files at the kill: {len(staged)}, after the restart: {len(staged_after)}; "
               f"restart on the same files dir {restart_s:.0f} s (tritonserver included); listed after: "
               f"{len(after)} = the {len(before)} earlier files (no partial one); earlier files intact by sha256: "
               f"{intact}; the same {size_mb} MB uploaded again: {again.status_code} in {whole_s:.1f} s, "
               f"sha256 {'intact' if whole else 'WRONG'}", ok,
               "tests/e2e/test_multi_replica.py (kill -9 mid-upload, 40 MB, S3 backend) + "
               "tests/e2e/test_shim_killed_mid_upload_local.py (64 MB, local files dir, 3 s)")


# --- the soak -----------------------------------------------------------------------------------------------------


def bad_requests() -> list[tuple[str, str, dict]]:
    """(name, path, httpx kwargs) of the bad-input corpus's cases that need no media server (each a 4xx)."""
    from tests.e2e import test_bad_input_corpus as corpus

    ctx = corpus.Ctx(base="", media=None, media_dir=Path("/nonexistent"), closed_port=9, client=None)
    prefixes = ("file:", "mime:", "data url:", "huge: png", "huge: mkv", "huge: mp4", "huge: 3000", "option:",
                "json:", "part:", "budget: 5")
    built = []
    for case in corpus.CASES:
        if not case.name.startswith(prefixes):
            continue
        try:
            req = case.build(ctx)
        except Exception:  # noqa: BLE001 - a case that needs the media server: not in the soak
            continue
        built.append((case.name, req.path, req.kwargs))
    return built


@dataclass
class Soak:
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors_5xx: list[str] = field(default_factory=list)
    transport: list[str] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_missed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, seconds: float, what: str, body: str) -> None:
        with self.lock:
            self.statuses.setdefault(kind, {}).setdefault(status, 0)
            self.statuses[kind][status] += 1
            self.latencies.setdefault(kind, []).append(seconds)
            if status >= 500:
                self.errors_5xx.append(f"{kind} {what}: {status} {body[:300]}")


MIB = 1024 * 1024
#: What is sampled per process (bytes): resident, proportional (shared pages split between their users), unique
#: (private pages: what the process alone costs), and the resident share of shared memory (/dev/shm: Triton's
#: stub <-> server regions, the decoder's media cache; counted in RSS, not a leak of the process).
MEM_KINDS = ("rss", "pss", "uss", "shmem", "anon")


def mem_of(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` (one kernel walk of the process's mappings) -> :data:`MEM_KINDS`."""
    m = rollup(pid)
    return {"rss": m.get("Rss", 0), "pss": m.get("Pss", 0),
            "uss": m.get("Private_Clean", 0) + m.get("Private_Dirty", 0), "shmem": m.get("Pss_Shmem", 0),
            "anon": m.get("Anonymous", 0)}


def processes(shim: Shim) -> dict[str, int]:
    """label -> pid: the shim, tritonserver, and every process below tritonserver (stubs, vLLM's EngineCore)."""
    triton = shim.tritonserver()
    found = {"shim": shim.proc.pid, "tritonserver": triton.pid}
    for p in triton.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.ppid() != triton.pid and p.parent().cmdline() == p.cmdline():
                continue  # a short-lived fork of a stub (a probe under a time limit): not a process of its own
            label = proc_label(p)
            n = 2
            while label in found:
                label, n = f"{proc_label(p)} #{n}", n + 1
            found[label] = p.pid
    return found


def dir_bytes(path: Path) -> int | None:
    """Bytes a folder holds in memory or on disk (allocated blocks of its files, recursively); None if absent."""
    if not path.is_dir():
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def shm_regions(shim: Shim) -> int:
    """Bytes of the Python backend's stub <-> server shared memory regions (``/dev/shm/<region>``, named by each
    stub's command line; they grow by --shm-growth-byte-size and never shrink)."""
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in shim.tritonserver().children():
            with contextlib.suppress(psutil.Error, OSError, IndexError):
                cmd = p.cmdline()
                if cmd[0].endswith("triton_python_backend_stub"):
                    total += os.stat(f"/dev/shm/{cmd[2]}").st_blocks * 512
    return total


@dataclass
class MemSample:
    t: float  # seconds since the load started (0: just before)
    procs: dict[str, dict[str, int]]  # label -> MEM_KINDS
    pids: dict[str, int]
    cache_bytes: float | None  # the decoder's media cache (its folder /dev/shm/vlt-media-cache-<tritonserver pid>)
    shm_bytes: float  # the stubs' shared memory regions with tritonserver


class MemSampler:
    """Samples :func:`mem_of` for :func:`processes` every ``every_s`` in a thread, from ``start()`` to ``stop()``."""

    def __init__(self, shim: Shim, every_s: float, smaps_dir: str = "", warmup_s: float = 0.0,
                 trim: Callable[[dict[str, int]], dict[str, tuple[int, int]]] | None = None) -> None:
        self.shim, self.every_s = shim, every_s
        self.smaps_dir, self.warmup_s, self.trim = Path(smaps_dir) if smaps_dir else None, warmup_s, trim
        self._warm_done = False
        self.warm_trim: dict[str, tuple[int, int]] = {}  # label -> RSS before/after malloc_trim(0) at the warm-up
        self.samples: list[MemSample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)
        self._began = 0.0

    def sample(self) -> None:
        t = time.monotonic() - self._began
        try:
            pids = processes(self.shim)
        except (psutil.Error, ValueError) as exc:
            self.errors.append(f"{t:.0f} s: {exc!r}")
            return
        procs = {}
        for label, pid in pids.items():
            with contextlib.suppress(OSError):
                procs[label] = mem_of(pid)
        cache = dir_bytes(Path("/dev/shm") / f"{SERVER_DIR_PREFIX}{pids['tritonserver']}")
        self.samples.append(MemSample(t, procs, pids, cache, shm_regions(self.shim)))
        logger.info("memory at %.0f s: %s", t, ", ".join(f"{k} {v['rss'] / MIB:.0f}" for k, v in procs.items()))
        if self._stop.is_set():
            if self.smaps_dir is not None:
                self.dump_smaps("end", pids)
        elif t >= self.warmup_s and not self._warm_done:
            self._warm_done = True
            if self.smaps_dir is not None:
                self.dump_smaps("warm", pids)
            if self.trim is not None:  # after the sample: what is in use at the warm-up, to compare with the end's
                self.warm_trim = self.trim(pids)
                logger.info("malloc_trim(0) at the warm-up: %s", ", ".join(
                    f"{k} {a / MIB:.0f} -> {b / MIB:.0f}" for k, (a, b) in self.warm_trim.items()))

    def dump_smaps(self, when: str, pids: dict[str, int]) -> None:
        """``/proc/<pid>/smaps`` of every process into ``smaps_dir/<when>-<label>.smaps`` (perf/smaps_diff.py)."""
        self.smaps_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in pids.items():
            with contextlib.suppress(OSError):
                name = re.sub(r"[^\w.-]+", "_", label)
                (self.smaps_dir / f"{when}-{name}.smaps").write_text(Path(f"/proc/{pid}/smaps").read_text())

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def start(self) -> None:
        self._began = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.sample()  # the end: the load's last moment


def malloc_trim(pid: int) -> bool:
    """Calls glibc's ``malloc_trim(0)`` inside process ``pid`` (gdb attaches for a second, libc symbols only):
    free heap pages glibc keeps go back to the kernel, so RSS that drops was free memory, not a leak."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return False
    done = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-iex", "set auto-solib-add off",
                           "-ex", r"sharedlibrary libc\.so", "-ex", "call (int)malloc_trim(0)"],
                          capture_output=True, text=True, timeout=120, check=False)
    return "$1 = " in done.stdout


def trim_probe(pids: dict[str, int], settle_s: float = 5.0) -> dict[str, tuple[int, int]]:
    """label -> (RSS idle, RSS idle after malloc_trim(0)), once the load has stopped; {} without gdb."""
    if shutil.which("gdb") is None:
        return {}
    time.sleep(settle_s)
    out = {}
    for label, pid in pids.items():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            idle = mem_of(pid)["rss"]
            if malloc_trim(pid):
                out[label] = (idle, mem_of(pid)["rss"])
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0 for fewer than 2)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return "".join(SPARKS[min(7, int((v - lo) / (hi - lo) * 8))] if hi > lo else SPARKS[0] for v in values)


@dataclass
class MemRow:
    label: str
    pid: int
    start: float  # MiB of ``kind``
    warm: float
    end: float
    slope_mib_min: float  # after the warm-up
    per_hour_pct: float  # that slope over an hour, relative to ``warm``
    flat: bool
    spark: str
    pss_end: float
    uss_end: float
    shmem_end: float
    anon_end: float
    new: bool  # not there before the load (a restart)


def series_of(samples: list[MemSample], pid: int) -> list[tuple[float, dict[str, int]]]:
    """(t, memory) of process ``pid`` in every sample that has it (tracked by pid: labels may repeat)."""
    out = []
    for s in samples:
        for label, p in s.pids.items():
            if p == pid and label in s.procs:
                out.append((s.t, s.procs[label]))
                break
    return out


def warm_sample(samples: list[MemSample], warmup_s: float) -> MemSample:
    return next((s for s in samples if s.t >= warmup_s), samples[-1])


def mem_rows(samples: list[MemSample], warmup_s: float, kind: str = "rss", limit: float = 0.10) -> list[MemRow]:
    """Per process of the last sample: ``kind`` before the load, after the warm-up (the first sample at or past
    ``warmup_s``), at the end; the least-squares slope from the warm-up on; flat when warm -> end is within
    ``limit`` or the slope extrapolates to less than ``limit`` per hour. A process that was not there before the
    load (restarted) is not flat."""
    warm_t = warm_sample(samples, warmup_s).t
    first_pids = set(samples[0].pids.values())
    rows = []
    for label, pid in samples[-1].pids.items():
        series = series_of(samples, pid)
        if not series:
            continue
        values = [(t, m[kind] / MIB) for t, m in series]
        start = values[0][1]
        after = [(t, v) for t, v in values if t >= warm_t] or values[-1:]
        w, end = after[0][1], values[-1][1]
        per_min = slope([(t / 60, v) for t, v in after])
        per_hour = per_min * 60 / w if w else 0.0
        new = pid not in first_pids
        flat = not new and (abs(end - w) <= limit * w or per_hour < limit)
        last = series[-1][1]
        rows.append(MemRow(label, pid, start, w, end, per_min, per_hour * 100, flat, sparkline([v for _, v in values]),
                           last["pss"] / MIB, last["uss"] / MIB, last["shmem"] / MIB, last["anon"] / MIB, new))
    return rows


def mem_tables(samples: list[MemSample], warmup_s: float, trimmed: dict[str, tuple[int, int]] | None = None,
               warm_trimmed: dict[str, tuple[int, int]] | None = None, max_rows: int = 16) -> str:
    """Markdown: per process start / warm / end / slope / flat (RSS), then the series (RSS MiB) over time.
    ``trimmed`` / ``warm_trimmed``: label -> RSS before and after malloc_trim(0), idle at the end / at the warm-up."""
    rows = mem_rows(samples, warmup_s)
    trimmed, warm_trimmed = trimmed or {}, warm_trimmed or {}
    warm = warm_sample(samples, warmup_s)
    every = samples[1].t - samples[0].t if len(samples) > 1 else 0
    lines = [f"Memory per process ({len(samples)} samples, {every:.0f} s apart; MiB; *start*: before the load; *warm*: "
             f"{warm.t:.0f} s into the load; slope: least squares over the samples from warm to the end; flat = "
             "warm -> end within 10 % or a slope under 10 %/h; PSS/USS/shmem/anon (anonymous) at the end; "
             "trimmed, warm -> end: RSS right after glibc's malloc_trim(0) in the process (gdb), at the warm-up "
             "with the load paused (nothing in flight, 3 s) and 5 s after it stopped: free heap glibc kept goes "
             "back, what is left is in use, so trimmed warm -> end is the growth of memory in use):", "",
             "| process | start | warm | end | start -> end | warm -> end | slope after warm | per hour | flat | "
             "PSS | USS | shmem | anon | trimmed: warm -> end | RSS series |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w_t, e_t = warm_trimmed.get(r.label), trimmed.get(r.label)
        trim_s = (f"{w_t[1] / MIB:.0f}" if w_t else "?") + " -> " + (f"{e_t[1] / MIB:.0f}" if e_t else "?")
        if w_t and e_t:
            trim_s += f" ({(e_t[1] - w_t[1]) / w_t[1] * 100:+.1f} %)"
        elif not (w_t or e_t):
            trim_s = ""
        lines.append(f"| {r.label}{' (new)' if r.new else ''} | {r.start:.0f} | {r.warm:.0f} | {r.end:.0f} | "
                     f"{(r.end - r.start) / r.start * 100:+.1f} % | {(r.end - r.warm) / r.warm * 100:+.1f} % | "
                     f"{r.slope_mib_min:+.2f} MiB/min | {r.per_hour_pct:+.1f} % | {'yes' if r.flat else '**no**'} | "
                     f"{r.pss_end:.0f} | {r.uss_end:.0f} | {r.shmem_end:.0f} | {r.anon_end:.0f} | {trim_s} | "
                     f"`{r.spark}` |")
    tracked = {r.pid for r in rows}  # the processes of the rows (not a short-lived one of an early sample)
    total = [sum(m["pss"] for k, m in s.procs.items() if s.pids[k] in tracked) / MIB for s in samples]
    lines.append(f"| all (sum of PSS) | {total[0]:.0f} | {total[samples.index(warm)]:.0f} | {total[-1]:.0f} | "
                 f"{(total[-1] - total[0]) / total[0] * 100:+.1f} % | "
                 f"{(total[-1] - total[samples.index(warm)]) / total[samples.index(warm)] * 100:+.1f} % "
                 f"| | | | | | | | | `{sparkline(total)}` |")
    step = max(1, -(-len(samples) // max_rows))
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    lines += ["", "RSS (MiB) over the soak; *cache*: the decoder's media cache (its /dev/shm folder, MiB; cap: "
              "video_decoder's cache_max_bytes); *shm*: the stubs' shared memory regions with tritonserver (MiB):", "",
              "| s | " + " | ".join(r.label for r in rows) + " | cache | shm |", "|---" * (len(rows) + 3) + "|"]
    for s in picked:
        by_pid = {s.pids[k]: m for k, m in s.procs.items()}
        cells = [f"{by_pid[r.pid]['rss'] / MIB:.0f}" if r.pid in by_pid else "" for r in rows]
        cache = f"{s.cache_bytes / MIB:.0f}" if s.cache_bytes is not None else ""
        lines.append(f"| {s.t:.0f} | " + " | ".join(cells) + f" | {cache} | {s.shm_bytes / MIB:.0f} |")
    return "\n".join(lines)


def write_series(path: Path, samples: list[MemSample]) -> None:
    """Every sample, one row per (time, process): seconds, label, pid, then :data:`MEM_KINDS` in bytes."""
    with open(path, "w") as out:
        out.write("\t".join(("seconds", "process", "pid", *MEM_KINDS, "media_cache_bytes", "shm_region_bytes"))
                  + "\n")
        for s in samples:
            for label, mem in s.procs.items():
                out.write("\t".join((f"{s.t:.1f}", label, str(s.pids[label]), *(str(mem[k]) for k in MEM_KINDS),
                                      "" if s.cache_bytes is None else f"{s.cache_bytes:.0f}",
                                      f"{s.shm_bytes:.0f}")) + "\n")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


#: What the soak's memory tables show growing, and what bounds it (found with --smaps-dir, --trace-shim and
#: perf/onednn_cache_probe.py; written under the tables).
MEMORY_NOTES = """What grows in the soak, and its cap (issue 19.4's leak hunt, 2026-12-03; no leak found):

- **VLLM::Worker: oneDNN primitives, a bounded cache.** vLLM runs each CPU linear layer through a oneDNN matmul
  handler (`vllm/model_executor/layers/utils.py`: `ops.create_onednn_mm(weight, 32)`) that builds one primitive
  per distinct token count of a step and keeps 32 per layer; oneDNN keeps up to `ONEDNN_PRIMITIVE_CACHE_CAPACITY`
  (1024 by default) in its global cache. A soak meets thousands of distinct step sizes, so the Worker's memory in
  use grows by about 300 MiB over its first minutes and stops there: `python perf/onednn_cache_probe.py` (the
  tiny model's 11 linear shapes, M = 1..1600, after malloc_trim) measures +293 MiB at M 200 and +306 MiB from
  M 800 on, +85 MiB with `ONEDNN_PRIMITIVE_CACHE_CAPACITY=64`; a 6-minute soak with that setting (and
  `MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072`) kept the Worker at 965 -> 966 MiB after its warm-up.
  The variable reaches the Worker from the environment of `python -m openai_frontend` (tritonserver, its stubs
  and vLLM's processes inherit it).
- **Every process: free heap that glibc keeps.** After a peak (many requests at once, a big bad input) freed
  memory stays in glibc's arenas: RSS steps up to a new high-water mark and stays. It is not in use:
  malloc_trim(0) gives it back (the *trimmed* column); smaps shows it in `[heap]` and the 64 MiB thread
  arenas. After the warm-up's malloc_trim, RSS climbs back toward the earlier high-water mark while memory in
  use stays flat: that is the Worker's and the llm stub's RSS slope after the warm-up. `MALLOC_ARENA_MAX` /
  `MALLOC_MMAP_THRESHOLD_` in the same environment trade it for more system calls.
- **The shim: nothing per request is kept.** Under tracemalloc (`--trace-shim`) over 4.5 minutes of load after
  the warm-up, Python memory grew by 1.6 MiB (modules first imported by rare requests, the gRPC calls in flight),
  classes and gc objects stayed flat (about 2,080 types, 106,000 objects); request logs, metric labels (fixed
  endpoint and code sets), asyncio tasks and the one gRPC channel are bounded. Its RSS growth is warm-up
  (imports, first requests of each kind) and glibc's free heap.
- **Not growing:** video_decoder's media cache (bounded by its `cache_max_bytes`; the soak's videos go to llm,
  which decodes them itself: the *cache* column stays 0), llm's image cache (`IMAGE_CACHE_BYTES`, 256 MiB; the
  soak sends no image with a uuid), vLLM's multimodal processor caches (`mm_processor_cache_gb`, 4 GiB, in the
  llm stub and EngineCore: the soak's few distinct videos hit; EngineCore stays flat) and KV cache
  (`kv_cache_memory_bytes`, allocated at start), the stubs' shared memory regions with tritonserver (the *shm*
  column)."""


def case_soak(shim: Shim, report: Report, clip: bytes, duration_s: float, concurrency: int, warmup_s: float = 120.0,
              sample_s: float = 20.0, series_tsv: str = "", smaps_dir: str = "", trim: bool = True) -> None:
    setup = httpx.Client(base_url=shim.url, timeout=120)
    file_id = upload(setup, clip).json()["id"]
    frames = jpeg_frames()
    clip_url = data_url(clip)
    bad = bad_requests()
    good: list[tuple[str, float, Callable[[], tuple[str, dict]]]] = [
        ("text", 0.35, lambda: ("/v1/chat/completions", {"json": chat_body()})),
        ("text stream", 0.05, lambda: ("/v1/chat/completions", {"json": chat_body(stream=True)})),
        ("video data URL", 0.25, lambda: ("/v1/chat/completions", {"json": chat_body(video(clip_url), **SMALL)})),
        ("file id", 0.15, lambda: ("/v1/chat/completions", {"json": chat_body(video(file_id), **SMALL)})),
        ("frame list", 0.15, lambda: ("/v1/chat/completions", {"json": chat_body(video(frames), **{
            "media_io_kwargs": {"video": {"fps": 2}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}})})),
    ]
    kinds, weights = [g[0] for g in good] + ["bad input"], [g[1] for g in good] + [0.05]
    makers = {g[0]: g[2] for g in good}
    soak, stop, go = Soak(), threading.Event(), threading.Event()
    go.set()
    in_flight = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = httpx.Client(base_url=shim.url, timeout=120)
        while not stop.is_set():
            go.wait()  # cleared while the load pauses for the malloc_trim probe at the warm-up
            kind = rng.choices(kinds, weights)[0]
            if kind == "bad input":
                what, path, kwargs = rng.choice(bad)
            else:
                what, (path, kwargs) = kind, makers[kind]()
            started = time.monotonic()
            with soak.lock:
                in_flight[0] += 1
            try:
                if kwargs.get("json", {}).get("stream"):
                    with client.stream("POST", path, **kwargs) as r:
                        body = "".join(r.iter_text())
                    status = 500 if '"error"' in body and r.status_code == 200 else r.status_code
                else:
                    r = client.post(path, **kwargs)
                    status, body = r.status_code, r.text
            except httpx.HTTPError as exc:
                with soak.lock:
                    soak.transport.append(f"{kind} {what}: {exc!r}")
                continue
            finally:
                with soak.lock:
                    in_flight[0] -= 1
            soak.record(kind, status, time.monotonic() - started, what, body)
            if kind != "bad input" and status != 200 and status < 500:
                with soak.lock:
                    soak.transport.append(f"{kind}: {status} {body[:200]}")

    def poller() -> None:
        client = httpx.Client(base_url=shim.url, timeout=2)
        while not stop.wait(0.5):
            if not go.is_set():
                continue  # gdb is stopping the processes one by one: not the server's answer time
            started = time.monotonic()
            try:
                r = client.get("/health")
                if r.status_code != 200:
                    soak.health_missed.append(f"{r.status_code}")
            except httpx.HTTPError as exc:
                soak.health_missed.append(repr(exc))
            soak.health.append(time.monotonic() - started)

    warmup_s = min(warmup_s, duration_s / 2)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    threads.append(threading.Thread(target=poller, daemon=True))
    paused: list[float] = []

    def pause_and_trim(pids: dict[str, int]) -> dict[str, tuple[int, int]]:
        """At the warm-up: the load stops (no request in flight), malloc_trim(0) in every process, the load goes
        on. Never under load: a process stopped by gdb inside malloc would deadlock in malloc_trim."""
        go.clear()
        began_pause = time.monotonic()
        try:
            with contextlib.suppress(TimeoutError):
                until(lambda: in_flight[0] == 0, 120, "the requests in flight", every_s=0.05)
            return trim_probe(pids, settle_s=3.0)
        finally:
            paused.append(time.monotonic() - began_pause)
            go.set()

    sampler = MemSampler(shim, sample_s, smaps_dir, min(warmup_s, duration_s / 2),
                         pause_and_trim if trim else None)
    sampler.start()  # the first sample: before the load
    began = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(duration_s)
    sampler.stop()  # the last sample: still under load
    stop.set()
    for t in threads:
        t.join(150)
    elapsed = time.monotonic() - began - sum(paused)  # seconds of load
    trimmed = trim_probe(sampler.samples[-1].pids) if trim else {}
    good_lat = [x for k, v in soak.latencies.items() if k != "bad input" for x in v]
    total = sum(sum(v.values()) for v in soak.statuses.values())
    counts = {k: dict(sorted(v.items())) for k, v in soak.statuses.items()}
    rows = mem_rows(sampler.samples, warmup_s)
    flat = bool(rows) and all(r.flat for r in rows) and not sampler.errors
    rss_s = "; ".join(f"{r.label} {r.start:.0f} -> {r.warm:.0f} -> {r.end:.0f} MiB ({r.slope_mib_min:+.2f} MiB/min = "
                      f"{r.per_hour_pct:+.1f} %/h after warm-up)" for r in rows)
    in_use = {k: (trimmed[k][1] - w[1]) / w[1] for k, w in sampler.warm_trim.items() if k in trimmed}
    worst = max(in_use, key=lambda k: abs(in_use[k]), default=None)
    in_use_s = (f"; memory in use (RSS after malloc_trim(0)) warm -> end: every process within "
                f"{abs(in_use[worst]) * 100:.1f} % (largest: {worst})" if worst else "")
    ok = not soak.errors_5xx and not soak.health_missed and not soak.transport and flat
    pause_s = (f" (and a {paused[0]:.0f} s pause at the warm-up: no request in flight while gdb ran malloc_trim "
               "in each process, /health not polled)" if paused else "")
    report.add(f"5. soak {duration_s / 60:.1f} min at concurrency {concurrency}",
               f"{total} requests in {elapsed:.0f} s of load{pause_s} ({total / elapsed:.1f}/s); "
               f"5xx: {len(soak.errors_5xx)}; "
               f"failed good requests (transport or 4xx): {len(soak.transport)}; p50 {pct(good_lat, 0.5):.2f} s, "
               f"p99 {pct(good_lat, 0.99):.2f} s (good requests); /health: {len(soak.health)} checks, "
               f"{len(soak.health_missed)} unanswered (2 s timeout), max {max(soak.health, default=0) * 1000:.0f} ms; "
               f"RSS (before the load -> after {warmup_s:.0f} s of warm-up -> end): {rss_s}: "
               f"{'every process flat after the warm-up' if flat else 'NOT flat'}{in_use_s}"
               f"{' (shim traced by tracemalloc: not the soak latency)' if shim.trace_dir else ''}",
               ok, "none (too long for CI); the bad-input corpus runs in tests/e2e/test_bad_input_corpus.py")
    report.blocks.append(mem_tables(sampler.samples, warmup_s, trimmed, sampler.warm_trim))
    report.blocks.append(MEMORY_NOTES)
    if smaps_dir:
        from perf.smaps_diff import diff

        for label in sampler.samples[-1].pids:
            name = re.sub(r"[^\w.-]+", "_", label)
            before, after = Path(smaps_dir) / f"warm-{name}.smaps", Path(smaps_dir) / f"end-{name}.smaps"
            if before.exists() and after.exists():
                logger.info("%s, warm -> end: %s", label, diff(before, after, top=8))
    if series_tsv:
        write_series(Path(series_tsv), sampler.samples)
    for err in sampler.errors[:5]:
        report.notes.append(f"Memory sampler: {err}")
    per_kind = ", ".join(f"{k}: {v} (p50 {pct(soak.latencies[k], 0.5):.2f} s, p99 {pct(soak.latencies[k], 0.99):.2f} s)"
                         for k, v in counts.items())
    report.notes.append(f"Soak requests by kind -> statuses: {per_kind}.")
    report.notes.append(f"Soak bad inputs: {len(bad)} corpus cases (tests/e2e/test_bad_input_corpus.py, those that "
                        "need no media server), drawn at random.")
    for line in (soak.errors_5xx + soak.transport + soak.health_missed)[:10]:
        report.notes.append(f"Soak problem: `{line[:300]}`")


# --- main ----------------------------------------------------------------------------------------------------------


def table(report: Report, meta: str) -> str:
    lines = [meta, "", "| case | result | pass | covered in CI by |", "|---|---|---|---|"]
    for row in report.rows:
        lines.append(f"| {row.case} | {row.result.replace('|', '/')} | {'yes' if row.ok else '**no**'} | {row.ci} |")
    lines += [""] + [f"- {n}" for n in report.notes]
    for block in report.blocks:
        lines += ["", block]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-s", type=float, default=300.0, help="soak duration in seconds")
    parser.add_argument("--soak-warmup-s", type=float, default=120.0,
                        help="seconds of load before the memory baseline (at most half the soak)")
    parser.add_argument("--sample-s", type=float, default=20.0, help="seconds between memory samples")
    parser.add_argument("--series-tsv", default="", help="also write every memory sample to this file")
    parser.add_argument("--trace-shim", default="", help="run the shim under perf/shim_traced.py, snapshots here "
                        "(every CHAOS_TRACE_EVERY_S seconds, 60 by default)")
    parser.add_argument("--smaps-dir", default="", help="dump every process's smaps here at warm-up and end, and log "
                        "where each grew (perf/smaps_diff.py)")
    parser.add_argument("--no-trim-probe", action="store_true", help="skip malloc_trim(0) (by gdb) after the soak")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--upload-mb", type=int, default=500, help="size of the upload cut by the shim's kill")
    parser.add_argument("--cases", default="1,2,3,4,5", help="which cases to run (comma-separated numbers)")
    parser.add_argument("--out", default=str(ROOT / "perf" / "RESULTS.md"), help="'' to write nothing")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cases = {int(c) for c in args.cases.split(",")}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="vlt-chaos-"))
    clip = make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))
    shim = Shim("shim", work, work / "files", trace_dir=args.trace_shim)
    report, sids, began = Report(), [], time.monotonic()
    try:
        logger.info("starting the shim and its tritonserver (work dir %s)", work)
        first_start = shim.start()
        sids += [shim.proc.pid, shim.tritonserver().pid]
        logger.info("ready in %.0f s", first_start)
        steps = [(1, lambda: case_kill_tritonserver(shim, report)), (2, lambda: case_disconnect(shim, report)),
                 (3, lambda: case_full_disk(shim, work, report, clip)),
                 (4, lambda: case_kill_shim_mid_upload(shim, report, clip, args.upload_mb)),
                 (5, lambda: case_soak(shim, report, clip, args.soak_s, args.concurrency, args.soak_warmup_s,
                                       args.sample_s, args.series_tsv, args.smaps_dir,
                                       not args.no_trim_probe))]
        for number, step in steps:
            if number in cases:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - one case's failure is a row, the others still run
                    logger.exception("case %d failed", number)
                    report.add(f"{number}. (crashed)", f"{type(exc).__name__}: {str(exc)[:300]}", False, "")
                if shim.proc is not None and shim.proc.poll() is None:
                    for sid in (shim.proc.pid, shim.tritonserver().pid):
                        if sid not in sids:
                            sids.append(sid)
    finally:
        shim.stop()
        reap_sessions(sids)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    meta = (f"Run {time.strftime('%Y-%m-%d')} with `make chaos` (`python perf/chaos.py --soak-s {args.soak_s:.0f} "
            f"--soak-warmup-s {args.soak_warmup_s:.0f} --concurrency {args.concurrency} --upload-mb {args.upload_mb}"
            f"{' --cases ' + args.cases if args.cases != '1,2,3,4,5' else ''}`) on {os.cpu_count()} cores, shared: "
            f"load average (1/5/15 min) {' '.join(load_before)} before, {' '.join(load_after)} after; tiny Qwen2-VL on "
            f"vLLM CPU, tritonserver 2.51 started and supervised by the shim on free loopback ports; "
            f"{time.monotonic() - began:.0f} s in all.")
    text = table(report, meta)
    print(text)
    if args.out:
        replace_section(Path(args.out), "Faults and soak", text)
    return 0 if all(r.ok for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
