"""An engine that dies answers UNAVAILABLE and fails readiness instead of hanging the server.

Destructive: kills the vLLM engine core of the shared server, so it runs last.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request

import psutil
import pytest

from tests.e2e.test_llm import GREEDY, _inputs, stream

pytestmark = [pytest.mark.e2e, pytest.mark.destructive]


def _engine_cores(server_pid: int) -> list[psutil.Process]:
    procs = psutil.Process(server_pid).children(recursive=True)
    return [p for p in procs if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()]


def _ready(url: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{url}/v2/models/{model}/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_llm_answers_unavailable_and_fails_readiness_when_the_engine_dies(triton) -> None:
    cores = _engine_cores(triton.proc.pid)
    assert cores, "no vLLM EngineCore process found under tritonserver"
    assert _ready(triton.http_url, "llm")
    for p in cores:
        p.kill()
    ask = _inputs(messages=json.dumps([{"role": "user", "content": "Hi"}]), sampling_parameters=json.dumps(GREEDY))
    deadline = time.monotonic() + 60
    while True:
        try:
            stream(triton.grpc_url, "llm", ask, timeout=60)
        except queue.Empty:
            pytest.fail("a request to a dead engine hung instead of answering UNAVAILABLE")
        except Exception as exc:  # noqa: BLE001 - the in-band error is what we inspect
            message = f"{exc} {getattr(exc, 'message', lambda: '')()}"
            if "unavailable" in message.lower() or "not healthy" in message:
                break
            assert time.monotonic() < deadline, f"never answered UNAVAILABLE; last error: {message}"
        else:
            assert time.monotonic() < deadline, "the dead engine kept answering"
        time.sleep(1)
    deadline = time.monotonic() + 60
    while _ready(triton.http_url, "llm"):
        assert time.monotonic() < deadline, "llm still reports ready with a dead engine"
        time.sleep(0.5)
    # the media models keep serving
    assert _ready(triton.http_url, "video_decoder")
