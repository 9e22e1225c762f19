"""A large upload over real sockets: streamed to disk while the server's memory stays flat."""

from __future__ import annotations

import logging
import os
import struct
import time
import uuid
from collections.abc import Iterator

import httpx

from tests.memory import PeakRss
from tests.videos import ClipSpec, make_video

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
SIZE_MIB = int(os.environ.get("VLT_TEST_UPLOAD_MIB", "200"))


def mp4_with_padding(total: int) -> Iterator[bytes]:
    """A valid MP4 of ``total`` bytes made on the fly: a small clip, then one big ``free`` box of zeros."""
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    pad = total - len(clip)
    yield clip + struct.pack(">I4s", pad, b"free")
    left = pad - 8
    zeros = bytes(MIB)
    while left > 0:
        n = min(left, MIB)
        yield zeros if n == MIB else zeros[:n]
        left -= n


def multipart(boundary: str, parts: Iterator[bytes]) -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nvision\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
           "Content-Type: video/mp4\r\n\r\n").encode()
    yield from parts
    yield f"\r\n--{boundary}--\r\n".encode()


def test_files_upload_streams_to_disk_with_flat_memory_when_the_file_is_large(files_server, settings) -> None:
    total = SIZE_MIB * MIB
    boundary = uuid.uuid4().hex
    with httpx.Client(timeout=300) as http:
        http.get(f"{files_server}/v1/files")  # warm the app before measuring
        with PeakRss() as rss:
            started = time.perf_counter()
            r = http.post(f"{files_server}/v1/files", content=multipart(boundary, mp4_with_padding(total)),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            seconds = time.perf_counter() - started
        assert r.status_code == 200, r.text
        growth = rss.peak - rss.start
        logger.info("uploaded %d MiB in %.2f s (%.0f MB/s); peak RSS growth %.1f MiB",
                       SIZE_MIB, seconds, total / seconds / 1e6, growth / MIB)
        assert growth < 64 * MIB
        assert r.json()["bytes"] == total
        tail = http.get(f"{files_server}/v1/files/{r.json()['id']}/content", headers={"Range": "bytes=-16"})
        assert tail.status_code == 206 and tail.content == bytes(16)
