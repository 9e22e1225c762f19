"""``python -m openai_frontend`` with its OWN tritonserver (not the session's; free ports, no video_generator):
after ``kill -9`` of that tritonserver the launcher reaps its whole process group (Python stubs, vLLM's EngineCore and
Worker: nothing orphaned), starts it again with backoff, and /health/ready and chat come back (issue 20.4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from video_pipeline.launch import free_port, group_members

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MODELS = "video_decoder,video_preprocessor,video_media,llm"  # what /health/ready and chat need


def children(pid: int, name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if comm == name and int(rest[1]) == pid and rest[0] != "Z":
                found.append(int(entry))
    return found


def wait_for(condition, timeout_s: float, what: str, log: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:.0f} s; shim log:\n{log.read_text(errors='replace')[-8000:]}")
        time.sleep(0.25)


def ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_launcher_restarts_a_killed_tritonserver_and_leaves_no_orphans(tiny_model, tmp_path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "shim.log"
    env = {**os.environ, "VLT_TRITON_MODELS": MODELS, "VLT_FILES_DIR": str(tmp_path / "files"),
           "VLT_TRITON_LOG_FILE": str(tmp_path / "tritonserver.log")}
    env.pop("VLT_TRITON_URL", None)
    with open(log, "wb") as out:
        shim = subprocess.Popen([sys.executable, "-m", "openai_frontend", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    groups: list[int] = []
    try:
        wait_for(lambda: ready(base_url) or shim.poll() is not None, 600, "ready", log)
        assert shim.poll() is None, log.read_text(errors="replace")[-8000:]
        (first,) = children(shim.pid, "tritonserver")
        groups.append(first)
        old = group_members(first)
        # The stubs and vLLM's EngineCore/Worker are in tritonserver's process group: that is what gets reaped.
        assert len(old) >= 4, old
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not ready(base_url), 30, "unready after the kill", log)
        wait_for(lambda: ready(base_url), 600, "ready again", log)
        (second,) = children(shim.pid, "tritonserver")
        groups.append(second)
        assert second != first
        assert group_members(first) == [], f"orphans of the killed tritonserver: {group_members(first)}"
        assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in old)
        r = httpx.post(f"{base_url}/v1/chat/completions", timeout=120, json={
            "model": "tiny-qwen2-vl", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        # Logged once the restart is complete (the decoder's scale applied), which may be after the shim is ready.
        wait_for(lambda: "tritonserver restarted" in log.read_text(errors="replace"), 120, "logged as restarted", log)
    finally:
        if shim.poll() is None:
            shim.send_signal(signal.SIGTERM)
            try:
                shim.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(shim.pid, signal.SIGKILL)
                shim.wait()
        leftovers = {pgid: group_members(pgid) for pgid in groups if group_members(pgid)}
        for pids in leftovers.values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
    assert shim.returncode == 0, log.read_text(errors="replace")[-8000:]
    assert not leftovers, f"processes left after the shim stopped: {leftovers}"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
