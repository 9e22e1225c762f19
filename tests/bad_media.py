"""Hostile media made in memory, small: declared sizes and counts that lie, containers with
too many streams, polyglots. Used by the bad-input corpus (tests/e2e/test_bad_input_corpus.py)
and the budget tests; the committed broken files are in tests/data/broken."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from tests.videos import ClipSpec, make_video


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds almost nothing: a decompression bomb's header."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def gif_js_polyglot() -> bytes:
    """``GIF89a/*...*/=1;alert(...)`` — JavaScript behind a GIF signature (whose size bytes are ``/*`` and
    ``=1``); no GIF decoder reads a picture from it."""
    return b"GIF89a/*=1\x00\x00*/=1;alert(document.domain);" + bytes(32)


def jpeg_html_polyglot() -> bytes:
    """A JPEG start-of-image marker followed by an HTML page: sniffed as JPEG, no image to decode."""
    return b"\xff\xd8\xff\xe0" + b"<html><script>alert(1)</script></html>" + bytes(16)


def pdf_mp4_polyglot() -> bytes:
    """A PDF header in front of a real mp4: neither container opens it as a video."""
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" + make_video(ClipSpec(width=64, height=64, num_frames=10))


# --- Matroska, written by hand (EBML) so that every declared field can lie ------------------------------


def _ebml_id(i: int) -> bytes:
    return i.to_bytes((i.bit_length() + 7) // 8, "big")


def _el(i: int, payload: bytes) -> bytes:
    return _ebml_id(i) + b"\x01" + len(payload).to_bytes(7, "big") + payload  # 8-byte size field


def _uint(i: int, v: int) -> bytes:
    return _el(i, v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big"))


def _text(i: int, s: str) -> bytes:
    return _el(i, s.encode())


@functools.cache
def _jpeg16() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 20, 200)).save(buf, "JPEG")
    return buf.getvalue()


def mkv(tracks: int = 1, width: int = 16, height: int = 16, duration_ms: float | None = None,
        codec: str = "V_MJPEG", frames: int = 1) -> bytes:
    """A Matroska file with ``tracks`` video tracks (MJPEG 16x16 frames on the first) whose header
    declares ``width`` x ``height`` and, when given, a ``duration_ms`` of its own."""
    header = _el(0x1A45DFA3, _uint(0x4286, 1) + _uint(0x42F7, 1) + _uint(0x42F2, 4) + _uint(0x42F3, 8)
                 + _text(0x4282, "matroska") + _uint(0x4287, 4) + _uint(0x4285, 2))
    info = _uint(0x2AD7B1, 1_000_000) + (_el(0x4489, struct.pack(">d", duration_ms)) if duration_ms else b"")
    entries = b"".join(
        _el(0xAE, _uint(0xD7, i + 1) + _uint(0x73C5, i + 1) + _uint(0x83, 1) + _text(0x86, codec)
            + _el(0xE0, _uint(0xB0, width) + _uint(0xBA, height)))
        for i in range(tracks))
    blocks = b"".join(_el(0xA3, b"\x81" + struct.pack(">h", k * 40) + b"\x80" + _jpeg16()) for k in range(frames))
    segment = _el(0x1549A966, info) + _el(0x1654AE6B, entries) + _el(0x1F43B675, _uint(0xE7, 0) + blocks)
    return header + _el(0x18538067, segment)


def many_streams(n: int) -> bytes:
    """An mkv with ``n`` copies of one tiny H.264 stream (PyAV muxes at most ~1000)."""
    import av

    src = make_video(ClipSpec(codec="libx264", container="mkv", width=16, height=16, num_frames=1, fps=1, gop=1))
    with av.open(io.BytesIO(src)) as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size]
        buf = io.BytesIO()
        with av.open(buf, "w", format="matroska") as out:
            for copy in [out.add_stream_from_template(stream) for _ in range(n)]:
                for p in packets:
                    p.stream = copy
                    out.mux(p)
    return buf.getvalue()


def mp4_declaring_frames(count: int) -> bytes:
    """A real 2 s mp4 whose sample table (stts) claims ``count`` frames."""
    data = bytearray(make_video(ClipSpec(width=64, height=64, fps=10, num_frames=20, faststart=True)))
    stts = data.index(b"stts") + 4  # version/flags(4) entry_count(4) then (sample_count, delta)...
    struct.pack_into(">I", data, stts + 8, count)
    return bytes(data)


def wav_tone(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of a 440 Hz tone (good audio, for cases where only the model is wrong)."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def wav_header_lying_long() -> bytes:
    """A WAV whose header declares about 3 hours of 16 kHz audio but holds a few samples."""
    data = bytes(3200)
    declared = 16000 * 2 * 3 * 3600
    return (b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000,
            32000, 2, 16) + b"data" + struct.pack("<I", declared) + data)
