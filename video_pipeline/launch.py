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
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


# Loading an ensemble loads its steps; listed anyway so each one's readiness is awaited.
DEFAULT_MODELS = ("video_decoder", "video_preprocessor", "video_media", "llm", "video_llm", "video_generator")


class LaunchError(RuntimeError):
    """The server could not be started or did not become ready."""


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


def free_port() -> int:
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


@dataclass
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
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
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
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process for its lifetime
        self.proc = subprocess.Popen(
            self.command(install), stdout=log, stderr=subprocess.STDOUT, env={**server_env(install), **self.env},
            start_new_session=True,
        )
        log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(self.models)
        while pending:
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

    def log_tail(self, lines: int = 80) -> str:
        if self.log_path is None or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left (engine workers included)."""
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver did not exit in %.0f s; killing its process group", timeout_s)
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()
        for shm in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            shm.unlink(missing_ok=True)
        self.proc = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", default="model_repository")
    p.add_argument("--load-model", action="append", dest="models", help="model to load (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-file", default=None)
    args, extra = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = TritonServer(
        Path(args.model_repository), args.models or list(DEFAULT_MODELS),
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port, host=args.host,
        log_path=Path(args.log_file) if args.log_file else None, extra_args=extra,
    )
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    logger.info("tritonserver ready: http %s grpc %s metrics %s:%d (log %s)",
                server.http_url, server.grpc_url, server.host, server.metrics_port, server.log_path)
    try:
        while not stop and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
