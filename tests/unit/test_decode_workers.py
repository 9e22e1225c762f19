"""A decode split over free decode slots (video_pipeline.media.cores, DecodeLimits.workers): the same frames,
times and metadata as one worker, errors from any worker, and slots counted across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.videos import ClipSpec, make_resolution_change, make_video, read_indices
from video_pipeline.errors import MediaTooLarge
from video_pipeline.media import decode
from video_pipeline.media.cores import CORES_DIR_ENV, borrowed_cores
from video_pipeline.media.decode import decode_video
from video_pipeline.media.options import DecodeLimits, VideoOptions


@pytest.fixture(autouse=True)
def _own_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Slots of this test alone: the suite's tritonservers on this machine count theirs in the default folder."""
    folder = tmp_path / "slots"
    monkeypatch.setenv(CORES_DIR_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def long_gops() -> tuple[ClipSpec, bytes]:
    spec = ClipSpec(num_frames=200, fps=25, gop=25, bframes=True, width=160, height=120)
    return spec, make_video(spec)


def _runs_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """Records each _decode_runs call: the thread that made it and the keyframes it decoded from."""
    seen: list[tuple[str, list[int]]] = []
    real = decode._decode_runs

    def spy(container: Any, stream: Any, runs: list[tuple[int, set[int]]], *rest: Any) -> None:
        seen.append((threading.current_thread().name, [key for key, _ in runs]))
        real(container, stream, runs, *rest)

    monkeypatch.setattr(decode, "_decode_runs", spy)
    return seen


def _same(a: decode.DecodedVideo, b: decode.DecodedVideo) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    assert a.metadata == b.metadata


@pytest.mark.parametrize("options", [
    {"num_frames": 16}, {"num_frames": 7}, {"fps": 3.0}, {"num_frames": 8, "start": 1.3, "end": 6.1},
    {"num_frames": 8, "mode": "keyframe"},
], ids=["16", "7", "fps3", "window", "keyframe"])
@pytest.mark.parametrize("workers", [2, 3, 8])
def test_decode_video_gives_the_same_frames_and_metadata_when_split_over_workers(
        long_gops, tmp_path, monkeypatch, options, workers) -> None:
    spec, data = long_gops
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    alone = decode_video(data, VideoOptions(**options), DecodeLimits(workers=1))
    seen = _runs_seen(monkeypatch)
    for source in (data, str(path)):
        seen.clear()
        split = decode_video(source, VideoOptions(**options), DecodeLimits(workers=workers))
        _same(split, alone)
        assert read_indices(split.frames) == split.frame_indices.tolist()
        keys = [key for _, ks in seen for key in ks]
        assert len(keys) == len(set(keys))  # each GOP decoded once
        assert 1 < len(seen) <= min(workers, len(keys))  # at most one share per worker
        # on more than one thread (the pool may hand a short share to a thread that already finished one)
        assert len({name for name, _ in seen}) > 1


def test_decode_video_decodes_on_one_thread_when_workers_is_one(long_gops, monkeypatch) -> None:
    seen = _runs_seen(monkeypatch)
    decode_video(long_gops[1], VideoOptions(num_frames=16), DecodeLimits(workers=1))
    assert len(seen) == 1 and len(seen[0][1]) == 8


def test_decode_video_runs_alone_when_another_process_holds_the_other_slots(
        long_gops, monkeypatch, _own_slots) -> None:
    # Another decoder process holding slots 1..3 of 4: this decode takes the one left, so it runs alone.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from video_pipeline.media.cores import borrowed_cores\n"
        "import os, fcntl\n"
        f"folder = Path({str(_own_slots)!r}); folder.mkdir(exist_ok=True)\n"
        "fds = [os.open(folder / str(i), os.O_RDWR | os.O_CREAT) for i in (1, 2, 3)]\n"
        "[fcntl.flock(fd, fcntl.LOCK_EX) for fd in fds]\n"
        "print('held', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with borrowed_cores(4) as free:
            assert free == 1
        seen = _runs_seen(monkeypatch)
        decode_video(long_gops[1], VideoOptions(num_frames=16), DecodeLimits(workers=4))
        assert len(seen) == 1
    finally:
        holder.communicate("")
    with borrowed_cores(4) as free:
        assert free == 4  # the kernel dropped the dead holder's locks


def test_borrowed_cores_gives_a_second_decode_only_what_the_first_left() -> None:
    with borrowed_cores(3) as first:
        with borrowed_cores(3) as second:
            assert (first, second) == (3, 1)  # the second still runs, on one worker
    with borrowed_cores(3) as again:
        assert again == 3


def test_borrowed_cores_decodes_alone_when_the_slot_folder_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with borrowed_cores(4, blocker / "slots") as free:
        assert free == 1


def test_decode_video_raises_from_a_worker_when_a_later_gop_is_over_the_pixel_limit(monkeypatch) -> None:
    # Ten 64x64 frames in GOPs of 5, then a 640x360 keyframe (a new SPS mid-stream, MPEG-TS): the big frame is
    # in the last share, decoded on another thread than the caller's.
    data = make_resolution_change(small=(64, 64), num_small=10, big=(640, 360))
    seen = _runs_seen(monkeypatch)
    with pytest.raises(MediaTooLarge, match="640x360"):
        decode_video(data, VideoOptions(num_frames=11), DecodeLimits(max_frame_pixels=100_000, workers=2))
    assert len({name for name, _ in seen}) == 2


def test_shares_are_contiguous_and_balanced_by_decode_cost() -> None:
    index = decode._Index(pts=np.arange(100), key=np.arange(100) % 10 == 0, has_pts=True,
                          cost=np.arange(100) % 10)
    order = [(g * 10, {g * 10 + 9}) for g in range(10)]  # every GOP decoded to its end
    shares = decode._shares(order, index, 3)
    assert [run for share in shares for run in share] == order
    assert sorted(len(s) for s in shares) == [3, 3, 4]
    assert decode._shares(order, index, 1) == [order]
    assert len(decode._shares(order[:2], index, 8)) == 2


def test_shares_keep_one_share_when_one_gop_is_most_of_the_work() -> None:
    # A 90-packet GOP then a 10-packet one (a long GOP in a short clip): no split, the slots become threads.
    index = decode._Index(pts=np.arange(100), key=np.isin(np.arange(100), [0, 90]), has_pts=True,
                          cost=np.where(np.arange(100) < 90, np.arange(100), np.arange(100) - 90))
    order = [(0, {89}), (90, {99})]
    assert decode._shares(order, index, 2) == [order]


@pytest.mark.parametrize(("threads", "slots", "shares", "expected"), [
    (1, 2, 1, [2]), (1, 2, 2, [1, 1]), (2, 3, 2, [4, 2]), (4, 8, 3, [12, 12, 8]), (0, 4, 2, [0, 0]),
    (1, 1, 1, [1]),
])
def test_share_threads_deal_the_slots_out(threads, slots, shares, expected) -> None:
    assert decode._share_threads(threads, slots, shares) == expected


def test_decode_video_gives_a_lone_share_the_free_slots_as_threads(monkeypatch) -> None:
    # One 60-frame GOP and a 4-frame one: one share, decoded with both slots' threads, frames as one thread's.
    data = make_video(ClipSpec(num_frames=64, fps=25, gop=60, bframes=True, width=160, height=120))
    threads: list[int] = []
    real = decode._decode_runs

    def spy(container: Any, stream: Any, *rest: Any) -> None:
        threads.append(stream.codec_context.thread_count)
        real(container, stream, *rest)

    monkeypatch.setattr(decode, "_decode_runs", spy)
    alone = decode_video(data, VideoOptions(num_frames=16), DecodeLimits(threads=1, workers=1))
    assert threads == [1]
    threads.clear()
    _same(decode_video(data, VideoOptions(num_frames=16), DecodeLimits(threads=1, workers=2)), alone)
    assert threads == [2]
