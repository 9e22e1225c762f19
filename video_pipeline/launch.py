"""Start a real ``tritonserver`` on this repository, with the Python backend wired to this venv.

The server and its Python backend come from the ``nvidia-pytriton`` wheel on CPU
machines (on GPUs NVIDIA's Triton container brings its own; then use
``tritonserver`` directly). Three traps are handled here (see docs/TRITON_CPU
facts in the README): the backend stub ignores PYTHONPATH, so this venv's
``bin`` goes first on PATH; the stub must bind the interpreter's own libpython,
so its LIBDIR goes first on LD_LIBRARY_PATH; SIGKILL orphans engine processes,
so the server runs in its own process group and is stopped with SIGTERM first.

Used by the tests (one server per test session) and by ``make serve``::

    python -m video_pipeline.launch --model-repository model_repository [--load-model video_decoder ...]

Decoder scale. Triton's config cannot compute from the machine, so ``video_decoder``'s
``count`` in config.pbtxt is what a plain ``tritonserver`` uses, and this launcher sizes
the decoder from the CPU cores it may use (affinity and cgroup quota, :func:`usable_cores`):
instances = min(cores, 8), FFmpeg threads per instance = max(1, cores // instances)
(:func:`decoder_scale`), and ``workers`` = cores // threads decode slots, which one decode may use
at once to split its GOPs while no other decode holds them (video_pipeline.media.cores).
Once the server is ready it reloads ``video_decoder`` with that
instance count and the ``threads`` and ``workers`` parameters through Triton's repository API (a config override:
the files are not touched, and the ensembles keep the reloaded decoder). A ``threads``
parameter set in config.pbtxt is kept; so is an instance group that is not one KIND_CPU group
(GPU decoding). ``VLT_DECODER_INSTANCES`` / ``--decoder-instances`` and
``VLT_DECODER_THREADS`` / ``--decoder-threads`` force either (0: from the cores);
``VLT_DECODER_SCALE=config`` / ``--decoder-scale config`` keeps config.pbtxt as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from video_pipeline.media.cores import usable_cores

logger = logging.getLogger(__name__)


# Loading an ensemble loads its steps; listed anyway so each one's readiness is awaited.
DEFAULT_MODELS = ("video_decoder", "video_preprocessor", "video_media", "llm", "video_llm", "video_generator")
#: Comma-separated models the launcher loads (default: DEFAULT_MODELS); e.g. without video_generator.
MODELS_ENV = "VLT_TRITON_MODELS"
#: Seconds between restarts of a tritonserver that exited on its own: doubling from the first, capped.
RESTART_BACKOFF_S = (1.0, 30.0)


def models_from_env() -> list[str]:
    """The models named by ``VLT_TRITON_MODELS`` (comma-separated), else :data:`DEFAULT_MODELS`."""
    raw = os.environ.get(MODELS_ENV, "")
    models = [m.strip() for m in raw.split(",") if m.strip()]
    return models or list(DEFAULT_MODELS)


class LaunchError(RuntimeError):
    """The server could not be started or did not become ready."""


# --- decoder scale ---------------------------------------------------------------------------------

DECODER = "video_decoder"
#: More decoder instances than this add memory (one Python stub each) for little: FFmpeg threads take the rest.
MAX_DECODER_INSTANCES = 8
#: Environment defaults of the launcher's decoder flags (the shim's launcher reads them too).
DECODER_SCALE_ENV = "VLT_DECODER_SCALE"  # "cores" (default): size video_decoder from the cores; "config": as is
DECODER_INSTANCES_ENV = "VLT_DECODER_INSTANCES"  # video_decoder instances; 0 (default): from the cores
DECODER_THREADS_ENV = "VLT_DECODER_THREADS"  # FFmpeg threads per instance; 0 (default): cores // instances
DECODER_SCALES = ("cores", "config")


@dataclass(frozen=True)
class DecoderScale:
    """How many video_decoder instances, and FFmpeg threads in each."""

    instances: int
    threads: int


def decoder_scale(cores: int, instances: int = 0, threads: int = 0,
                  max_instances: int = MAX_DECODER_INSTANCES) -> DecoderScale:
    """The decoder's scale on ``cores`` usable cores; ``instances``/``threads`` > 0 are kept as given.

    One instance per core up to ``max_instances`` (each instance serves one request at a time, so
    this is how many decodes run at once), then the cores shared out as FFmpeg threads:
    ``max(1, cores // instances)``, so instances x threads never oversubscribes the cores when
    every instance is busy. On 2 cores: 2 instances of 1 thread; on 32: 8 of 4.
    """
    for name, value, least in (("cores", cores, 1), ("max_instances", max_instances, 1),
                               ("instances", instances, 0), ("threads", threads, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise LaunchError(f"decoder scale: {name} must be an integer >= {least}, got {value!r}")
    n = instances or min(cores, max_instances)
    return DecoderScale(n, threads or max(1, cores // n))


def scaled_decoder_config(config: dict, cores: int, instances: int = 0, threads: int = 0) -> dict | None:
    """``video_decoder``'s config (Triton's JSON) with the instance count, ``threads`` and ``workers`` (decode
    slots, ``cores // threads``: see video_pipeline.media.cores) chosen from ``cores``; None when there is
    nothing to change or it is not ours to change (not one KIND_CPU group)."""
    groups = config.get("instance_group") or []
    if len(groups) != 1 or groups[0].get("kind", "KIND_CPU") != "KIND_CPU":
        return None  # GPU decoding, or several groups: the operator placed them
    params = config.get("parameters") or {}
    pinned, pinned_workers = (_int_param(params, name) for name in ("threads", "workers"))
    scale = decoder_scale(cores, instances, threads or pinned)
    workers = pinned_workers or max(1, cores // scale.threads)
    if groups[0].get("count") == scale.instances and (pinned, pinned_workers) == (scale.threads, workers):
        return None
    out = json.loads(json.dumps(config))
    out["instance_group"][0]["count"] = scale.instances
    out.setdefault("parameters", {})["threads"] = {"string_value": str(scale.threads)}
    out["parameters"]["workers"] = {"string_value": str(workers)}
    return out


def _int_param(params: dict, name: str) -> int:
    """A config.pbtxt parameter of video_decoder's as an integer; 0 where unset."""
    configured = (params.get(name) or {}).get("string_value", "")
    try:
        return int(configured) if configured else 0
    except ValueError:
        raise LaunchError(f"{DECODER}: parameter {name} must be an integer, got {configured!r}") from None


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else 0
    except ValueError:
        raise LaunchError(f"{name} must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise LaunchError(f"{name} must be a non-negative integer, got {raw!r}")
    return value


def _env_scale() -> str:
    value = os.environ.get(DECODER_SCALE_ENV, "") or "cores"
    if value not in DECODER_SCALES:
        raise LaunchError(f"{DECODER_SCALE_ENV} must be one of {list(DECODER_SCALES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    backend_dir: Path
    lib_dirs: tuple[Path, ...]


def find_triton() -> TritonInstall:
    """Locates tritonserver and the Python backend (pytriton wheel, else a system install)."""
    spec = importlib.util.find_spec("pytriton")  # does not import pytriton itself
    if spec and spec.submodule_search_locations:
        home = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        libs = home.parent.parent / "nvidia_pytriton.libs"
        backend = home / "backends" / "python"
        stub = backend / "triton_python_backend_stub"
        if not stub.exists():
            # The wheel ships one stub per Python version beside the backend; the backend
            # looks for it in its own folder, where the stub's RPATH also resolves.
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            source = home / "python_backend_stubs" / ver / "triton_python_backend_stub"
            if not source.exists():
                raise LaunchError(f"pytriton has no python-backend stub for Python {ver}")
            shutil.copy2(source, stub)
        return TritonInstall(home / "bin" / "tritonserver", home / "backends", (libs,))
    system = Path("/opt/tritonserver")
    if (system / "bin" / "tritonserver").exists():
        return TritonInstall(system / "bin" / "tritonserver", system / "backends", ())
    raise LaunchError("tritonserver not found: install nvidia-pytriton (scripts/setup.sh) or use NVIDIA's image")


#: Where :func:`free_port` looks: below Linux's ephemeral range (``ip_local_port_range``, 32768-60999 by
#: default), so that no outgoing connection takes a server's port while it is down, e.g. between a killed
#: tritonserver and its restart on the same ports.
FREE_PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """A loopback TCP port nothing listens on now, picked at random in :data:`FREE_PORT_RANGE` (the kernel's
    own choice, from the ephemeral range, if none is free there after a few tries)."""
    for _ in range(64):
        port = random.randint(*FREE_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, *[p for p in env.get("PATH", "").split(os.pathsep) if "pyenv/shims" not in p]])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [libdir, *map(str, install.lib_dirs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in parts if p)
    env.pop("PYTHONPATH", None)
    return env


# --- processes ---------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (tritonserver leads its own; the Python stubs and vLLM's
    EngineCore and Worker stay in it, also once tritonserver is gone); zombies are not counted."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields after the last ')' are fixed (state ppid pgrp ...).
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def kill_group(pgid: int, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process of process group ``pgid`` and wait until none is left; returns the pids that
    were killed. The Python stubs ignore SIGTERM and vLLM's EngineCore and
    Worker outlive a killed tritonserver: this is what keeps them from becoming orphans."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while True:
        # Members first: once the group is empty its id (a reaped leader's pid) is free, and killpg on it could
        # hit a newer group whose leader took that pid (pids wrap, at 32768 on many machines).
        members = group_members(pgid)
        if not members:
            return killed
        with _suppress_lookup():
            os.killpg(pgid, signal.SIGKILL)
        for pid in members:
            with _suppress_lookup():
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        if time.monotonic() > deadline:
            logger.error("processes %s of tritonserver's process group %d survived SIGKILL", members, pgid)
            return killed
        time.sleep(0.05)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind in (ProcessLookupError, PermissionError)


def _parent_death_signal() -> object:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when the launcher dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed launcher takes its tritonserver along instead of leaving it on the ports; None elsewhere.
    Resolved here, in the parent: the child, forked from a threaded process, only calls it."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return arm


_PDEATHSIG = _parent_death_signal()


def port_holder(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


@dataclass(eq=False)  # identity: kept in a WeakSet
class TritonServer:
    """One tritonserver process on loopback ports; a context manager."""

    model_repository: Path
    models: list[str]
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # on top of the environment it needs (server_env)
    ready_timeout_s: float = 300.0
    # video_decoder's scale (module docstring): "cores" sizes it from usable_cores(), "config" leaves it;
    # instances/threads > 0 force those. Defaults: the VLT_DECODER_* environment variables.
    decoder_scale: str = field(default_factory=_env_scale)
    decoder_instances: int = field(default_factory=lambda: _env_int(DECODER_INSTANCES_ENV))
    decoder_threads: int = field(default_factory=lambda: _env_int(DECODER_THREADS_ENV))
    # The kernel SIGTERMs tritonserver when the thread that started it ends (PR_SET_PDEATHSIG): for a launcher
    # that starts it from a thread living as long as itself (Supervisor), so a killed launcher leaves no server.
    die_with_parent: bool = False
    cancel: threading.Event | None = None  # set: a start in progress gives up (LaunchError)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        _SERVERS.add(self)
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.shm_prefix = f"vlt{os.getpid()}_{self.grpc_port}_"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self, install: TritonInstall) -> list[str]:
        cmd = [
            str(install.server),
            f"--model-repository={Path(self.model_repository).resolve()}",
            f"--backend-directory={install.backend_dir}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=20",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=67108864",
        ]
        cmd += [f"--load-model={m}" for m in self.models]
        return cmd + list(self.extra_args)

    def start(self) -> TritonServer:
        install = find_triton()
        taken = [f"{name} {self.host}:{port}" for name, port in
                 (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port))
                 if port_holder(self.host, port)]
        if taken:  # an orphaned tritonserver, or another service: never report ready against it
            raise LaunchError(f"cannot start tritonserver: something else already listens on {', '.join(taken)} "
                              "(an orphaned tritonserver of an earlier launch? stop it, or choose other ports)")
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime; restarts append
        self.proc = subprocess.Popen(
            self.command(install), stdout=log, stderr=subprocess.STDOUT, env={**server_env(install), **self.env},
            # Its own process group (every stub and engine process stays in it: stop() reaps them all), in the
            # launcher's session: a session of its own is an autogroup of its own to the kernel's scheduler,
            # and across autogroups Linux starved the launcher's threads (the shim) for seconds while the
            # engine generated, holding streamed tokens back (issue 20.3).
            process_group=0, preexec_fn=_PDEATHSIG if self.die_with_parent else None,
        )
        log.close()
        try:
            self.wait_ready()
            self.scale_decoder()
        except BaseException:
            self.stop()
            raise
        return self

    def scale_decoder(self) -> None:
        """Reloads a loaded video_decoder with the instances and threads chosen from the cores."""
        if self.decoder_scale not in DECODER_SCALES:
            raise LaunchError(f"decoder_scale must be one of {list(DECODER_SCALES)}, got {self.decoder_scale!r}")
        if self.decoder_scale == "config" or not self._ready(DECODER):
            return
        config = self._get_json(f"/v2/models/{DECODER}/config")
        cores = usable_cores()
        scaled = scaled_decoder_config(config, cores, self.decoder_instances, self.decoder_threads)
        if scaled is None:
            logger.info("%s: keeping config.pbtxt's instance_group and threads", DECODER)
            return
        logger.info("%s: %d instance(s) x %s FFmpeg thread(s), %s decode slot(s) on %d usable core(s)", DECODER,
                    scaled["instance_group"][0]["count"], scaled["parameters"]["threads"]["string_value"],
                    scaled["parameters"]["workers"]["string_value"], cores)
        self._post_json(f"/v2/repository/models/{DECODER}/load", {"parameters": {"config": json.dumps(scaled)}})
        self.wait_ready()

    def _get_json(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=30) as resp:
            return json.loads(resp.read())

    def _post_json(self, path: str, body: dict) -> None:
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.ready_timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            raise LaunchError(f"POST {path}: {exc.code} {exc.read()[:500]!r}\n{self.log_tail()}") from None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(self.models)
        while pending:
            if self.cancel is not None and self.cancel.is_set():
                raise LaunchError("tritonserver's start was cancelled")
            if self.proc is not None and self.proc.poll() is not None:
                raise LaunchError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"models {pending} not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")
            if self._ready(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.25)

    def _ready(self, model: str) -> bool:
        url = f"http://{self.http_url}/v2/models/{model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def started() -> list[TritonServer]:
        """The servers of this process that were started and not stopped (for a test's failure report)."""
        return [server for server in list(_SERVERS) if server.proc is not None]

    def exit_status(self) -> str | None:
        """None while the process runs; else how it ended, in words (a signal by name)."""
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            return None
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (the kernel's OOM killer, or a supervisor?)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exited with status {code}"

    def log_tail(self, lines: int = 80) -> str:
        if self.log_path is None or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM tritonserver, wait, then SIGKILL whatever is left of its process group (stubs, engine workers),
        also when it is already dead (killed): its children outlive it otherwise."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver did not exit in %.0f s; killing its process group", timeout_s)
        # process_group=0: the server's pid is its group id, still usable once it has gone.
        left = kill_group(proc.pid)
        if left:
            logger.info("killed %d process(es) left by tritonserver (pid %d): %s", len(left), proc.pid, left)
        proc.wait()
        for shm in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            shm.unlink(missing_ok=True)
        self.proc = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SERVERS: weakref.WeakSet[TritonServer] = weakref.WeakSet()


class Supervisor:
    """Keeps a :class:`TritonServer` running: when it exits on its own (killed, crashed) its whole process group is
    reaped (stubs, vLLM's EngineCore and Worker) and it is started again on the same ports, after
    1, 2, 4 ... 30 s (:data:`RESTART_BACKOFF_S`; back to 1 s once a server has stayed up a minute).

    Every start happens on the supervisor's own thread, which lives until :meth:`stop`, so the server can be
    tied to it (``die_with_parent``): a launcher killed with SIGKILL takes its tritonserver along.
    """

    #: A server that stayed up this long after its start resets the backoff.
    STABLE_S = 60.0

    def __init__(self, server: TritonServer, backoff_s: tuple[float, float] = RESTART_BACKOFF_S) -> None:
        self.server = server
        self.backoff_s = backoff_s
        self.restarts = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        server.cancel = self._stop
        server.die_with_parent = True

    def start(self) -> Supervisor:
        """Starts the server and returns once it is ready (LaunchError if its first start fails)."""
        self._thread = threading.Thread(target=self._run, name="triton-supervisor", daemon=True)
        self._thread.start()
        while not self._ready.wait(0.2):
            if not self._thread.is_alive():
                raise self._error or LaunchError("tritonserver's supervisor stopped")
        return self

    def alive(self) -> bool:
        """Whether the supervisor still keeps a server (False after :meth:`stop` or a failed first start)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stops supervising, then stops the server (SIGTERM, then its whole process group)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            self.server.stop()

    def _run(self) -> None:
        try:
            self._start_once()
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._error = exc
            with self._lock:
                self.server.stop()
            return
        self._ready.set()
        delay = self.backoff_s[0]
        started = time.monotonic()
        while not self._stop.is_set():
            proc = self.server.proc
            if proc is not None and proc.poll() is None:
                self._stop.wait(0.5)
                continue
            code = proc.returncode if proc is not None else None
            if time.monotonic() - started > self.STABLE_S:
                delay = self.backoff_s[0]
            logger.error("tritonserver (pid %s) exited with %s; reaping its processes and restarting in %.0f s:\n%s",
                         proc.pid if proc is not None else "?", code, delay, self.server.log_tail(20))
            with self._lock:
                self.server.stop(timeout_s=0)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.backoff_s[1])
            started = time.monotonic()
            try:
                self._start_once()
            except LaunchError as exc:
                if self._stop.is_set():
                    return
                logger.error("tritonserver restart failed: %s", str(exc).splitlines()[0])
                continue
            self.restarts += 1
            logger.info("tritonserver restarted (restart %d): gRPC %s", self.restarts, self.server.grpc_url)

    def _start_once(self) -> None:
        with self._lock:
            if self._stop.is_set():
                raise LaunchError("tritonserver's start was cancelled")
            proc = self.server.proc
            if proc is not None:
                self.server.stop(timeout_s=0)
        try:
            self.server.start()  # not under the lock: stop() may cancel it meanwhile
        except BaseException:
            with self._lock:
                self.server.stop(timeout_s=0)
            raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", default="model_repository")
    p.add_argument("--load-model", action="append", dest="models", help="model to load (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-file", default=None)
    p.add_argument("--decoder-scale", choices=DECODER_SCALES, default=_env_scale(),
                   help=f"cores: size video_decoder from the usable cores; config: as config.pbtxt says "
                        f"(env {DECODER_SCALE_ENV})")
    p.add_argument("--decoder-instances", type=int, default=_env_int(DECODER_INSTANCES_ENV),
                   help=f"video_decoder instances; 0: min(cores, {MAX_DECODER_INSTANCES}) (env {DECODER_INSTANCES_ENV})")
    p.add_argument("--decoder-threads", type=int, default=_env_int(DECODER_THREADS_ENV),
                   help=f"FFmpeg threads per video_decoder instance; 0: max(1, cores // instances) "
                        f"(env {DECODER_THREADS_ENV})")
    args, extra = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = TritonServer(
        Path(args.model_repository), args.models or models_from_env(),
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port, host=args.host,
        log_path=Path(args.log_file) if args.log_file else None, extra_args=extra,
        decoder_scale=args.decoder_scale, decoder_instances=args.decoder_instances,
        decoder_threads=args.decoder_threads,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor = Supervisor(server)
    try:
        supervisor.start()
        logger.info("tritonserver ready: http %s grpc %s metrics %s:%d (log %s); restarted if it exits",
                    server.http_url, server.grpc_url, server.host, server.metrics_port, server.log_path)
        while not stop.wait(0.5) and supervisor.alive():
            pass
    finally:
        supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
