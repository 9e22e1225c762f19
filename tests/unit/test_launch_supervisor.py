"""The launcher's supervision on a real tritonserver (video_decoder only: seconds to start): a server killed with
SIGKILL is reaped with its whole process group (the Python stubs it leaves behind) and started again on the same ports;
a launcher killed with SIGKILL takes its server along; ports a stranger holds are refused (issue 20.4, 20.5)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from video_pipeline.launch import LaunchError, Supervisor, TritonServer, group_members

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "model_repository"


def ready(server: TritonServer) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/video_decoder/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_for(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:.0f} s")
        time.sleep(0.1)


def test_supervisor_reaps_the_process_group_and_restarts_on_the_same_ports_when_tritonserver_is_killed(tmp_path) -> None:
    server = TritonServer(MODEL_REPOSITORY, ["video_decoder"], log_path=tmp_path / "triton.log",
                          decoder_scale="config")
    supervisor = Supervisor(server, backoff_s=(0.5, 2.0))
    supervisor.start()
    try:
        first = server.proc.pid
        stubs = [p for p in group_members(first) if p != first]
        assert stubs, "the python backend stubs run in tritonserver's process group"
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 1 and ready(server), 120, "restarted")
        assert server.proc.pid != first and (server.http_port, server.grpc_port, server.metrics_port) == ports
        assert group_members(first) == [], "processes of the killed server outlived it"
        assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in stubs)
    finally:
        supervisor.stop()
    assert group_members(first) == [] and server.proc is None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_launcher_killed_with_sigkill_takes_its_tritonserver_along(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from video_pipeline.launch import Supervisor, TritonServer
        server = TritonServer(Path({str(MODEL_REPOSITORY)!r}), ["video_decoder"], decoder_scale="config")
        Supervisor(server).start()
        Path({str(pid_file)!r}).write_text(str(server.proc.pid))
        time.sleep(600)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 120, "started")
        triton = int(pid_file.read_text())
        assert group_members(triton)
        launcher.kill()
        launcher.wait(10)
        wait_for(lambda: not group_members(triton), 60, "gone with its launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if pid_file.exists() and pid_file.read_text():
            for pid in group_members(int(pid_file.read_text())):
                os.kill(pid, signal.SIGKILL)


def test_triton_server_refuses_to_start_when_a_stranger_holds_its_port(tmp_path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        server = TritonServer(MODEL_REPOSITORY, ["video_decoder"], grpc_port=stranger.getsockname()[1],
                              log_path=tmp_path / "triton.log")
        with pytest.raises(LaunchError, match=f"already listens on gRPC 127.0.0.1:{stranger.getsockname()[1]}"):
            server.start()
        assert server.proc is None
