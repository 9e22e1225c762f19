"""Uploads: our streamed ``POST /v1/files`` vs FastAPI's ``UploadFile``, and what N questions cost.

    python perf/bench_upload.py [--mib 1024] [--repeats 3]     -> perf/RESULTS.md "Upload"

Each server runs in its own process on loopback, with its own store directory:
(a) ours: ``python -m openai_frontend`` (the real shim; the Files API needs no tritonserver),
    the multipart body parsed as it streams, hashed (sha256) and written, fsynced, renamed;
(b) FastAPI ``UploadFile``: the usual way to take a file in FastAPI (Starlette spools the
    part to a temporary file), then copied to the store with sha256, no fsync.
The client sends one valid MP4 of the given size (a small clip, then a ``free`` box of
random bytes) as multipart over a raw socket with Content-Length, so the client costs
little. Runs are interleaved; the server's RSS is sampled every 10 ms. The second table
counts the bytes a client sends to ask N questions about one video: with a file id the
video crosses the wire once; inline as a data: URL, 4/3 of it crosses every time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Form, UploadFile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import replace_section  # noqa: E402
from tests.memory import PeakRss  # noqa: E402
from tests.videos import ClipSpec, make_video  # noqa: E402
from video_pipeline.launch import free_port  # noqa: E402

MIB = 1024 * 1024
SERVERS = ("ours", "fastapi-uploadfile")


# --- the baseline server ---------------------------------------------------------------------------

def baseline_app(store: Path):  # noqa: ANN201 - a FastAPI app
    """FastAPI's documented upload path: ``UploadFile`` (spooled by Starlette), then into the store."""
    app = FastAPI()

    def keep(src, name: str) -> tuple[int, str]:  # noqa: ANN001
        digest, size = hashlib.sha256(), 0
        with open(store / name, "wb") as dst:
            while chunk := src.read(MIB):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    @app.post("/v1/files")
    def create(file: UploadFile, purpose: str = Form(...)) -> dict:  # sync: FastAPI runs it in a thread
        name = f"file-{uuid.uuid4().hex}"
        size, _ = keep(file.file, name)
        return {"id": name, "object": "file", "bytes": size, "purpose": purpose}

    return app


def serve(kind: str, port: int, store: Path) -> subprocess.Popen:
    env = {**os.environ, "VLT_FILES_DIR": str(store), "VLT_LOG_LEVEL": "warning"}
    if kind == "ours":
        cmd = [sys.executable, "-m", "openai_frontend", "--triton-url", "127.0.0.1:9", "--port", str(port)]
    else:
        cmd = [sys.executable, __file__, "--serve-baseline", str(port), "--store", str(store)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


# --- the client ------------------------------------------------------------------------------------

def body_parts(total: int, boundary: str) -> tuple[bytes, Iterator[bytes], bytes, int]:
    """(preamble, file bytes, epilogue, content length) of a multipart upload of a ``total``-byte MP4."""
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nvision\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(MIB)

    def file_bytes() -> Iterator[bytes]:
        pad = total - len(clip)
        yield clip + pad.to_bytes(4, "big") + b"free"
        left = pad - 8
        while left > 0:
            n = min(left, MIB)
            yield block if n == MIB else block[:n]
            left -= n

    return head, file_bytes(), tail, len(head) + total + len(tail)


def upload(port: int, total: int) -> tuple[float, dict]:
    boundary = uuid.uuid4().hex
    head, chunks, tail, length = body_parts(total, boundary)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
        started = time.perf_counter()
        s.sendall((f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n").encode()
                  + head)
        for chunk in chunks:
            s.sendall(chunk)
        s.sendall(tail)
        response = b""
        while data := s.recv(65536):
            response += data
        seconds = time.perf_counter() - started
    status_line, _, rest = response.partition(b"\r\n")
    if b" 200 " not in status_line:
        raise RuntimeError(f"upload failed: {response[:500]!r}")
    return seconds, json.loads(rest.partition(b"\r\n\r\n")[2])


def delete(port: int, file_id: str) -> None:
    import httpx

    httpx.delete(f"http://127.0.0.1:{port}/v1/files/{file_id}", timeout=60)


# --- N questions -----------------------------------------------------------------------------------

def question(url: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}},
        {"type": "text", "text": "What happens in this video?"}]}]}).encode()


def wire_bytes(video: int, n: int) -> tuple[int, int]:
    """Request bytes a client sends for n questions: (upload once + file ids, inline data: URL each time)."""
    upload_once = video + 400  # the multipart envelope
    by_id = upload_once + n * len(question("file-" + "0" * 32))
    data_url = len(question("data:video/mp4;base64,")) + 4 * ((video + 2) // 3)
    return by_id, n * data_url


# --- bytes to the decoder, or a path ---------------------------------------------------------------

def padded_mp4(total: int) -> bytes:
    _, chunks, _, _ = body_parts(total, "x")
    return b"".join(chunks)


def transfer(mibs: tuple[int, ...], repeats: int) -> str:
    """What handing the decoder the file's bytes costs, against reading it from a shared path.

    The padded MP4 decodes the same 10 small frames whatever its size, so the time that grows with
    the size is the cost of moving the bytes (client -> gRPC -> tritonserver -> Python stub)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from video_pipeline import contract as C
    from video_pipeline.launch import TritonServer
    from video_pipeline.steps import MEDIA_ROOT_ENV

    options = {"num_frames": 4}
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=ROOT / ".cache"))
    try:
        with TritonServer(ROOT / "model_repository", ["video_decoder"], env={MEDIA_ROOT_ENV: str(work)}) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            for mib in mibs:
                data = padded_mp4(mib * MIB)
                digest = hashlib.sha256(data).hexdigest()  # stored as the Files API stores it: named by its hash
                path = work / "blobs" / digest[:2] / digest[2:]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                by_bytes, by_path = [], []
                def call(video: bytes, opts: dict) -> float:
                    inputs = [grpcclient.InferInput(C.VIDEO, [1], "BYTES"),
                              grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")]
                    inputs[0].set_data_from_numpy(np.array([video], dtype=np.object_))
                    inputs[1].set_data_from_numpy(np.array([json.dumps(opts).encode()], dtype=np.object_))
                    started = time.perf_counter()
                    result = client.infer(C.VIDEO_DECODER.name, inputs)
                    took = time.perf_counter() - started
                    assert result.as_numpy(C.FRAMES).shape[0] == 4
                    return took

                for r in range(repeats + 1):  # the first of each is a warm-up; a fresh cache key each time
                    by_bytes.append(call(data, {**options, "max_frames": 700 - r}))
                    by_path.append(call(b"", {**options, "max_frames": 600 - r,
                                                  "path": str(path.relative_to(work))}))
                rows.append((mib, statistics.median(by_bytes[1:]), statistics.median(by_path[1:])))
                print(f"{mib} MiB: bytes over gRPC {rows[-1][1] * 1e3:.0f} ms, path {rows[-1][2] * 1e3:.0f} ms",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| file | video_decoder given the bytes over gRPC, ms | given a path under its media_root, ms |",
             "|---:|---:|---:|"]
    lines += [f"| {mib} MiB | {b * 1e3:.0f} | {p * 1e3:.0f} |" for mib, b, p in rows]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------------

def run(mib: int, repeats: int) -> str:
    total = mib * MIB
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in SERVERS}
    work = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=ROOT / ".cache"))
    procs, ports = {}, {}
    try:
        for kind in SERVERS:
            (work / kind).mkdir()
            ports[kind] = free_port()
            procs[kind] = serve(kind, ports[kind], work / kind)
        for kind in SERVERS:  # warm each server (imports, first request) before measuring
            _, body = upload(ports[kind], 4 * MIB)
            delete(ports[kind], body["id"])
        for r in range(repeats):
            for kind in SERVERS if r % 2 == 0 else reversed(SERVERS):
                with PeakRss(procs[kind].pid) as rss:
                    seconds, body = upload(ports[kind], total)
                assert body["bytes"] == total, body
                results[kind].append((seconds, rss.peak - rss.start))
                print(f"{kind:20s} {mib} MiB in {seconds:.2f} s = {total / seconds / 1e6:.0f} MB/s, "
                      f"RSS +{(rss.peak - rss.start) / MIB:.1f} MiB", flush=True)
                delete(ports[kind], body["id"])
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"`python perf/bench_upload.py --mib {mib} --repeats {repeats}` on {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end. One {mib} MiB MP4 over loopback (raw socket, "
        "Content-Length), interleaved runs; MB/s = 10^6 bytes/s of file data from the first byte sent to the "
        "response; RSS growth = peak RSS of the server (and its children) minus its RSS before the upload.",
        "",
        "| server | median s | median MB/s | best MB/s | max RSS growth MiB | ours / it (time) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ours = statistics.median(s for s, _ in results["ours"])
    for kind in SERVERS:
        secs = [s for s, _ in results[kind]]
        med = statistics.median(secs)
        lines.append(f"| {kind} | {med:.2f} | {total / med / 1e6:.0f} | {total / min(secs) / 1e6:.0f} | "
                     f"{max(g for _, g in results[kind]) / MIB:.1f} | {ours / med:.2f} |")
    lines += ["", "ours: streamed multipart parse -> sha256 + write in a writer thread -> fsync -> rename (durable, "
              "deduplicated); fastapi-uploadfile: Starlette spools the part to a temporary file, then the handler "
              "copies it to the store with sha256 (two writes, no fsync).", "",
              "Bytes a client sends to ask N questions about one video of this size:", "",
              "| N | upload once + file id | inline data: URL | ratio |", "|---:|---:|---:|---:|"]
    for n in (1, 5, 20):
        by_id, inline = wire_bytes(total, n)
        lines.append(f"| {n} | {by_id / MIB:.1f} MiB | {inline / MIB:.1f} MiB | {inline / by_id:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print, do not update perf/RESULTS.md")
    parser.add_argument("--transfer", default="", help="also time bytes vs a path to video_decoder for these "
                        "sizes in MiB, e.g. 1,64,256 (starts tritonserver)")
    args = parser.parse_args()
    if args.serve_baseline:
        import uvicorn

        uvicorn.run(baseline_app(args.store), host="127.0.0.1", port=args.serve_baseline, log_level="warning")
        return 0
    body = run(args.mib, args.repeats)
    if args.transfer:
        body += ("\n\nHanding a stored file to video_decoder in tritonserver (gRPC, cold media cache each call): "
                 "its bytes in the request (data: and http media; uploaded files when tritonserver does not share "
                 "the disk), against its path under the decoder's media_root (uploaded files when it does: what "
                 "`python -m openai_frontend` sets up; a blob's name is its sha256, so it is not read to be hashed). "
                 "The padded MP4 decodes the same 4 small frames at every "
                 "size, so the growth is the cost of moving and hashing bytes.\n\n" + transfer(tuple(int(m) for m in args.transfer.split(",")),
                                                             args.repeats))
    print(body)
    if not args.no_write:
        replace_section(ROOT / "perf" / "RESULTS.md", "Upload", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
