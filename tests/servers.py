"""Servers the tests run: an ASGI app served by uvicorn on a loopback port in a background thread (real sockets,
real streaming), and the shim as a child process (:class:`ShimProcess`) that a test may kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(app: Any, port: int = 0, name: str = "app") -> Iterator[str]:
    """Serves ``app`` on 127.0.0.1:``port`` (0: a free one) until the block ends; yields its base URL."""
    import uvicorn

    from video_pipeline.launch import free_port

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class ShimProcess:
    """``python -m openai_frontend --triton-url ...`` as a child process in its own process group, so a test can
    SIGKILL it mid-request (a crashed replica) and start it again; every start appends to one log file."""

    def __init__(self, name: str, triton_url: str, env: dict[str, str], log_path: Path,
                 ready_timeout_s: float = 90.0) -> None:
        self.name = name
        self.triton_url = triton_url
        self.env = env  # VLT_* settings on top of this process's environment
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ShimProcess:
        """Starts the shim on a free port and waits until /health/ready answers 200 (its Triton models ready)."""
        from video_pipeline.launch import free_port

        self.port = free_port()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name}: starting on port {self.port} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openai_frontend", "--triton-url", self.triton_url, "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=ROOT)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown hook runs (no lease handed back, no temp file removed)."""
        if self.proc is None:
            return
        from video_pipeline.launch import group_members

        # A reaped leader's pid is free once its group is empty: killpg on it then could hit a newer process
        # group (pids wrap at 32768 here), e.g. a tritonserver's.
        if self.proc.poll() is None or group_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (the shim's graceful shutdown), then SIGKILL whatever of its group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP/SIGCONT: the replica holds its connections but does nothing (it claims no job meanwhile)."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, chars: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: Any):  # noqa: ANN201 - openai.OpenAI, imported lazily
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="x", max_retries=0, timeout=120, **kwargs)
