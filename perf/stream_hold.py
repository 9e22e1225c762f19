"""Issue 20.3's held-back streams, straight to ``llm`` over gRPC, with the stub's send times beside the client's
receive times: where does a stream's first response wait?

    python perf/stream_hold.py [--rounds 4] [--tokens 2000] [--mode thread|direct] [--repeat-nonstream 1]

Builds a throwaway model repository holding only ``llm`` (this repository's config.pbtxt and model.json, an
experimental model.py around :class:`video_pipeline.triton_adapter.DecoupledModel` that stamps each response:
put into the sink's outbox, taken by the sender, ``ResponseSender.send`` returned), starts tritonserver on it
(``video_pipeline.launch.TritonServer``), then sends rounds of: N non-streamed requests, one streamed request,
each on its own gRPC stream (as the shim does). Per streamed request it prints, in ms after the request was sent:
the stub's first put / first send returned, the client's first and last response. ``--mode direct`` sends from
the engine's thread instead of the adapter's response thread. Start it only under the e2e lock.

Found with it (2026-12-04, 2 CPUs, kernel 6.18): the stub's sends returned within 1-20 ms, yet the client
got nothing for up to 7 s, and ``--probe`` (a process sleeping 1 ms in a loop) stalled just as long, up to
39 s when pinned to the vLLM Worker's CPU. With ``/proc/sys/kernel/sched_autogroup_enabled`` 0 no stall
and no held stream (5 of 5, largest lag 6 ms); with it 1 and tritonserver in a session of its own (an
autogroup of its own), held 3 of 5. video_pipeline.launch now starts tritonserver in its own process group
within the launcher's session, and this script, starting it that way, sees no held stream.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODEL_PY = '''
import os, queue, threading, time
from pathlib import Path

from video_pipeline.triton_adapter import BlsMedia, DecoupledModel

TRACE = os.environ.get("SH_TRACE", "")
MODE = os.environ.get("SH_MODE", "thread")


class _Stamped(queue.Queue):
    """The outbox, stamping each item with the time it was put and the thread that put it."""

    def put(self, item, block=True, timeout=None):
        if item is not None:
            item = (*item, time.time())
        super().put(item, block, timeout)


class _Direct:
    """An outbox that sends at once, on the caller's thread."""

    def __init__(self, model):
        self.model = model
        self.lock = threading.Lock()

    def put(self, item, block=True, timeout=None):
        if item is None:
            return
        with self.lock:
            self.model._send_one((*item, time.time()))

    def get(self):
        time.sleep(3600)


class TritonPythonModel(DecoupledModel):
    contract_name = "llm"

    def make_handler(self, args, params):
        from video_pipeline.llm_handler import LlmHandler

        return LlmHandler.from_model_dir(Path(args["model_repository"]) / args["model_version"], media=BlsMedia())

    def initialize(self, args):
        super().initialize(args)
        self._trace = open(TRACE, "a", buffering=1) if TRACE else None
        old, self._outbox = self._outbox, (_Direct(self) if MODE == "direct" else _Stamped())
        old.put(None)  # the adapter's response thread waits on the old outbox: end it, start ours
        self._sender_thread.join()
        self._sender_thread = threading.Thread(target=self._send_loop, name="responses", daemon=True)
        self._sender_thread.start()

    def _send_loop(self):
        while True:
            item = self._outbox.get()
            if item is None:
                return
            self._send_one(item)

    def _send_one(self, item):
        sender, response, flags, t_put = item
        t_get = time.time()
        try:
            if response is None:
                sender.send(flags=flags)
            else:
                sender.send(response, flags=flags)
        except Exception as exc:
            print("send failed", exc, flush=True)
        t_end = time.time()
        if self._trace is not None:
            self._trace.write(f"{id(sender)} {flags} {t_put:.6f} {t_get:.6f} {t_end:.6f}\\n")
'''


PROBE = """
import sys, time
out = open(sys.argv[1], "a", buffering=1)
prev = time.time()
while True:
    time.sleep(0.001)
    now = time.time()
    if now - prev > 0.05:
        out.write(f"{prev:.6f} {now - prev:.3f}\\n")
    prev = now
"""


def build_repo(folder: Path) -> Path:
    repo = folder / "repo"
    (repo / "llm" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "model_repository/llm/config.pbtxt", repo / "llm/config.pbtxt")
    args = json.loads((ROOT / "model_repository/llm/1/model.json").read_text())
    args["model"] = str((ROOT / "model_repository/llm/1" / args["model"]).resolve())
    (repo / "llm/1/model.json").write_text(json.dumps(args))
    (repo / "llm/1/model.py").write_text(MODEL_PY)
    return repo


def inputs_of(stream: bool, tokens: int):
    import numpy as np
    from tritonclient.grpc import InferInput

    def text(name: str, value: str) -> InferInput:
        t = InferInput(name, [1], "BYTES")
        t.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
        return t

    messages = [{"role": "user", "content": "Tell me everything."}]
    flag = InferInput("stream", [1], "BOOL")
    flag.set_data_from_numpy(np.array([stream], dtype=np.bool_))
    sampling = {"max_tokens": tokens, "temperature": 0, "ignore_eos": True}
    return [text("messages", json.dumps(messages)), text("sampling_parameters", json.dumps(sampling)), flag]


class Clients:
    """How requests reach llm: ``grpc-new`` (a sync tritonclient per request), ``grpc-shared`` (one sync client,
    one stream per request), ``aio`` (one tritonclient.grpc.aio client, the shim's pattern: a stream per request,
    its request half kept open until the final response), ``shim`` (the OpenAI SDK through a shim started on the
    server, ``python -m openai_frontend --triton-url``)."""

    def __init__(self, kind: str, url: str, shim_url: str = "", http_url: str = "") -> None:
        self.kind, self.url, self.shim_url, self.http_url = kind, url, shim_url, http_url
        self.shared = None
        self.loop = None
        if kind == "grpc-shared":
            import tritonclient.grpc as grpcclient

            self.shared = grpcclient.InferenceServerClient(url)
        elif kind == "aio":
            import asyncio

            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

            async def make():
                from tritonclient.grpc.aio import InferenceServerClient

                return InferenceServerClient(url)

            self.shared = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        elif kind == "shim":
            import openai

            self.shared = openai.OpenAI(base_url=f"{shim_url}/v1", api_key="x", max_retries=0, timeout=300)

    def request(self, stream: bool, tokens: int, request_id: str) -> dict:
        if self.kind == "aio":
            import asyncio

            return asyncio.run_coroutine_threadsafe(self._aio(stream, tokens, request_id), self.loop).result()
        if self.kind == "shim":
            return self._shim(stream, tokens)
        if self.kind == "http":
            return self._http(stream, tokens, request_id)
        return self._sync(stream, tokens, request_id)

    def _sync(self, stream: bool, tokens: int, request_id: str) -> dict:
        import tritonclient.grpc as grpcclient

        received: queue.Queue = queue.Queue()

        def callback(result, error):
            received.put((time.time(), result, error))

        client = self.shared or grpcclient.InferenceServerClient(self.url)
        times: list[float] = []
        try:
            client.start_stream(callback=callback)
            sent = time.time()
            client.async_stream_infer("llm", inputs_of(stream, tokens), request_id=request_id,
                                      enable_empty_final_response=True)
            while True:
                at, result, error = received.get(timeout=120)
                if error is not None:
                    raise RuntimeError(str(error))
                final = result.get_response().parameters["triton_final_response"].bool_param
                if result.as_numpy("text_output") is not None:
                    times.append(at)
                if final:
                    break
            client.stop_stream()
        except BaseException:
            client.stop_stream(cancel_requests=True)
            raise
        finally:
            if self.shared is None:
                client.close()
        return {"sent": sent, "times": times}

    async def _aio(self, stream: bool, tokens: int, request_id: str) -> dict:
        import asyncio

        done = asyncio.Event()
        inputs = inputs_of(stream, tokens)

        async def requests():
            yield {"model_name": "llm", "inputs": inputs, "request_id": request_id}
            await done.wait()

        times: list[float] = []
        sent = time.time()
        call = self.shared.stream_infer(requests())
        try:
            async for result, error in call:
                if error is not None:
                    raise RuntimeError(str(error))
                times.append(time.time())
                finish = result.as_numpy("finish_reason")
                if finish is not None and finish.reshape(-1)[0]:
                    break
        finally:
            done.set()
        return {"sent": sent, "times": times}

    def _http(self, stream: bool, tokens: int, request_id: str) -> dict:
        """Triton's own HTTP ``generate_stream`` (SSE), read line by line with the standard library."""
        import http.client

        host, port = self.http_url.rsplit(":", 1)
        body = json.dumps({"id": request_id, "messages": json.dumps([{"role": "user", "content": "Tell me everything."}]),
                           "sampling_parameters": json.dumps({"max_tokens": tokens, "temperature": 0,
                                                              "ignore_eos": True}),
                           "stream": stream})
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        times = []
        sent = time.time()
        conn.request("POST", "/v2/models/llm/generate_stream", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        while True:
            line = response.readline()
            if not line:
                break
            if line.startswith(b"data:") and b"text_output" in line:
                times.append(time.time())
        conn.close()
        return {"sent": sent, "times": times}

    def _shim(self, stream: bool, tokens: int) -> dict:
        messages = [{"role": "user", "content": "Tell me everything."}]
        sent = time.time()
        kwargs = {"model": "tiny-qwen2-vl", "messages": messages, "max_tokens": tokens, "temperature": 0,
                  "extra_body": {"ignore_eos": True}}
        if not stream:
            self.shared.chat.completions.create(**kwargs)
            return {"sent": sent, "times": [time.time()]}
        times = []
        for chunk in self.shared.chat.completions.create(stream=True, **kwargs):
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.time())
        return {"sent": sent, "times": times}


def wait_http(url: str, timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def stub_sends(trace: Path, after: float) -> list[tuple[float, float, float]]:
    """(put, taken, send returned) of the first stub-side request that started after ``after``."""
    rows = []
    for line in trace.read_text().splitlines():
        _sender, flags, t_put, t_get, t_end = line.split()
        if float(t_put) < after:
            continue
        rows.append((float(t_put), float(t_get), float(t_end)))
        if flags != "0":
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeat-nonstream", type=int, default=1, help="non-streamed requests before each stream")
    parser.add_argument("--mode", choices=("thread", "direct"), default="thread")
    parser.add_argument("--client", choices=("grpc-new", "grpc-shared", "aio", "shim", "http"), default="grpc-new")
    parser.add_argument("--strace", action="store_true",
                        help="strace tritonserver's socket writes and polls into the folder (strace.txt)")
    parser.add_argument("--perf", action="store_true",
                        help="perf record socket syscalls and scheduler switches of the whole machine (perf.data)")
    parser.add_argument("--probe", action="store_true",
                        help="a separate process sleeping 1 ms in a loop logs its late wake-ups (probe.txt)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for tritonserver (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (log, trace)")
    ns = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from video_pipeline.launch import TritonServer

    folder = Path(tempfile.mkdtemp(prefix="stream_hold_"))
    trace = folder / "trace.txt"
    trace.touch()
    repo = build_repo(folder)
    server = TritonServer(repo, ["llm"], log_path=folder / "tritonserver.log", ready_timeout_s=600,
                          env={"SH_TRACE": str(trace), "SH_MODE": ns.mode,
                               **dict(e.split("=", 1) for e in ns.env)})
    print(f"folder {folder} mode {ns.mode} client {ns.client} pid {os.getpid()}", flush=True)
    server.start()
    shim = tracer = probe = None
    held = 0
    try:
        if ns.strace:
            tracer = subprocess.Popen(["strace", "-f", "-tt", "-e", "trace=sendmsg,write,writev,epoll_wait,epoll_pwait",
                                       "-o", str(folder / "strace.txt"), "-p", str(server.proc.pid)],
                                      stderr=subprocess.DEVNULL)
            time.sleep(2)
        if ns.perf:
            events = ",".join(f"syscalls:sys_{w}_{c}" for c in ("sendmsg", "recvmsg", "epoll_wait", "epoll_pwait")
                              for w in ("enter", "exit")) + ",sched:sched_switch,sched:sched_wakeup"
            tracer = subprocess.Popen(["perf", "record", "-a", "-k", "CLOCK_REALTIME", "-e", events,
                                       "-o", str(folder / "perf.data")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(2)
        if ns.probe:
            probe = subprocess.Popen([sys.executable, "-c", PROBE, str(folder / "probe.txt")])
        shim_url = ""
        if ns.client == "shim":
            from video_pipeline.launch import free_port

            port = free_port()
            shim = subprocess.Popen([sys.executable, "-m", "openai_frontend", "--port", str(port), "--triton-url",
                                     server.grpc_url], cwd=ROOT, stdout=open(folder / "shim.log", "w"),
                                    stderr=subprocess.STDOUT)
            shim_url = f"http://127.0.0.1:{port}"
            wait_http(f"{shim_url}/v1/models")
        clients = Clients(ns.client, server.grpc_url, shim_url, server.http_url)
        clients.request(True, 8, "warmup")
        for r in range(ns.rounds):
            for k in range(ns.repeat_nonstream):
                res = clients.request(False, ns.tokens, f"ns{r}-{k}")
                print(f"round {r} non-stream: {1000 * (res['times'][-1] - res['sent']):.0f} ms", flush=True)
            res = clients.request(True, ns.tokens, f"s{r}")
            time.sleep(0.2)  # the trace's last line
            sent, times = res["sent"], res["times"]
            rows = stub_sends(trace, sent)
            first_put = (rows[0][0] - sent) * 1000 if rows else float("nan")
            first_end = (rows[0][2] - sent) * 1000 if rows else float("nan")
            worst_send = max((e - g for _, g, e in rows), default=0) * 1000
            worst_wait = max((g - p for p, g, _ in rows), default=0) * 1000
            first, last = (times[0] - sent) * 1000, (times[-1] - sent) * 1000
            is_held = first > 0.3 * last
            ends = [e for _, _, e in rows]
            lags = [t - e for t, e in zip(times, ends, strict=False)] if ns.client != "shim" else []
            burst = sum(1 for t in times if t - times[0] < 0.005)
            with open(folder / "streams.jsonl", "a") as out:
                out.write(json.dumps({"round": r, "sent": sent, "times": times, "stub": rows}) + "\n")
            held += is_held
            print(f"round {r} stream: chunks {len(times)} stub first put {first_put:.0f} ms, first send returned "
                  f"{first_end:.0f} ms (slowest send {worst_send:.0f} ms, longest outbox wait {worst_wait:.0f} ms); "
                  f"client first {first:.0f} ms (with {burst} chunks in its 5 ms), last {last:.0f} ms; "
                  f"largest lag behind the stub's send {1000 * max(lags, default=0):.0f} ms"
                  f"{'  HELD' if is_held else ''}", flush=True)
        print(f"held {held} of {ns.rounds}", flush=True)
    finally:
        if probe is not None:
            probe.terminate()
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        if shim is not None:
            shim.terminate()
            shim.wait(30)
        server.stop()
        if not ns.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
