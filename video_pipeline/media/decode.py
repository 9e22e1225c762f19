"""Video bytes -> sampled RGB frames with PyAV, decoding only what the samples need.

Two passes over the container:

1. **Index**: demux the video stream's packets without decoding them (cheap: no
   pixels) and keep only their timestamps and keyframe flags. This gives every
   frame's true presentation time (variable frame rate safe), the frame count
   and the keyframe positions, with memory flat in video length. With a time
   window (``start``/``end``) only the window is indexed: seek to the keyframe
   at or before ``start`` and stop demuxing shortly after ``end``, so a
   10-second window of a 2-hour video costs about what a 10-second video does.
   Frame indices inside a window are then timestamp x average frame rate:
   exact for constant frame rate; for variable frame rate the index the frame
   would have at a constant rate (its timestamp stays exact).
2. **Decode**: for each run of samples, seek to the keyframe that starts its
   GOP and decode forward. Non-reference frames that are not samples are
   discarded by FFmpeg (``skip_frame=NONREF``) and only samples are converted to
   RGB, in FFmpeg's scaler, at the target size. Where seeking lands somewhere
   unexpected the decoder falls back to decoding sequentially.

``mode="keyframe"`` moves each sample to the nearest keyframe within a
tolerance and decodes keyframes alone; the returned timestamps are the true
times of the frames actually returned.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import av
import numpy as np

from video_pipeline.contract import VideoMetadata
from video_pipeline.errors import DecodeTimeout, InvalidInput, MediaTooLarge
from video_pipeline.media.cores import borrowed_cores
from video_pipeline.media.facts import (
    Source,
    check_video,
    declared_duration,
    facts_of,
    ffmpeg_reason,
    frame_size_excess,
    h264_slices,
    open_container,
    video_stream,
)
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.media.sampling import sampling_plan, select_frames, snap_to_keyframes

logger = logging.getLogger(__name__)


@dataclass
class DecodedVideo:
    """Sampled frames plus everything needed to describe them truthfully."""

    frames: np.ndarray  # (T, H, W, 3) uint8, display orientation
    timestamps: np.ndarray  # (T,) float64 seconds from the first frame
    frame_indices: np.ndarray  # (T,) int64 position in presentation order
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Index:
    pts: np.ndarray  # presentation order, stream time_base units
    key: np.ndarray  # presentation order, bool
    has_pts: bool
    cost: np.ndarray  # presentation order: packets to decode from the GOP's keyframe to reach it
    pts0: int | None = None  # the video's first presentation time (None: pts[0], the whole video is indexed)
    rate: float = 0.0  # a window's average frame rate: frame index = round(time * rate)
    total_frames: int | None = None  # frames in the whole video (None: len(pts))
    duration: float | None = None  # of the whole video, seconds (None: from the indexed frames)
    slices: int = 1  # slices in the first keyframe (H.264; 1 where unknown): see _set_threads

    @property
    def partial(self) -> bool:
        return self.pts0 is not None


class Deadline:
    """A wall-clock limit of ``seconds`` from now (0: none); :meth:`check` between units of work."""

    def __init__(self, seconds: float, what: str = "decoding") -> None:
        self.seconds = seconds
        self.what = what
        self.at = time.monotonic() + seconds if seconds > 0 else math.inf

    def check(self) -> None:
        """:class:`DecodeTimeout` once the limit has passed."""
        if time.monotonic() > self.at:
            raise DecodeTimeout(f"{self.what} took longer than the {self.seconds:g} s limit")


_Deadline = Deadline  # the name gpu_decode uses


def decode_video(
    source: Source, options: VideoOptions | None = None, limits: DecodeLimits | None = None,
    media: MediaSettings | None = None,
) -> DecodedVideo:
    """Decodes the frames ``options`` asks for from a container in memory or on disk, scaled (in
    FFmpeg's pixel path) to the size the served model's processor gives them (``media``).

    Raises :class:`InvalidInput` (corrupt/truncated/empty/non-video),
    :class:`UnsupportedMedia` (audio only, no decoder), :class:`MediaTooLarge`
    (a budget in ``limits``) or :class:`DecodeTimeout`.
    """
    options = options or VideoOptions()
    limits = limits or DecodeLimits()
    options.check_limits(limits)
    deadline = Deadline(limits.decode_timeout_s)
    if options.start is not None or options.end is not None:
        with _open(source, limits) as container:
            stream = _video_stream(container, limits)
            index = _build_window_index(container, stream, limits, deadline, options.start, options.end)
            if index is not None:
                return _decode_indexed(container, stream, index, options, limits, deadline, media,
                                       reopen=lambda: _open(source, limits))
    with _open(source, limits) as container:
        stream = _video_stream(container, limits)
        index = _build_index(container, stream, limits, deadline)
        return _decode_indexed(container, stream, index, options, limits, deadline, media,
                               reopen=lambda: _open(source, limits))


def _decode_indexed(
    container: Any, stream: Any, index: _Index, options: VideoOptions, limits: DecodeLimits, deadline: Deadline,
    media: MediaSettings | None = None, reopen: Callable[[], Any] | None = None,
) -> DecodedVideo:
    """The decode pass over an indexed stream (whole video or a window); ``reopen`` (another container of
    the input) lets it split the GOPs over the decode slots it finds free (``limits.workers``)."""
    tb = stream.time_base or Fraction(1, 90000)
    pts0 = int(index.pts[0]) if index.pts0 is None else index.pts0
    times = (index.pts - pts0).astype(np.float64) * float(tb)
    frame_duration = _frame_duration(stream, times)
    chosen = select_frames(times, frame_duration, options)
    snapped = np.zeros(len(chosen), dtype=bool)
    if options.mode == "keyframe" and index.has_pts:
        chosen, snapped = snap_to_keyframes(
            times, chosen, np.flatnonzero(index.key), options.keyframe_tolerance,
            cheap=np.flatnonzero(index.cost <= _CHEAP_DEPTH), cost=index.cost,
        )

    cc = stream.codec_context
    media = media or MediaSettings()

    def out_size(disp_h: int, disp_w: int) -> tuple[int, int]:
        if options.resize:
            # Sized for the frame count asked: a clip budget (Qwen3-VL) depends on it.
            return media.video_size(max(1, len(chosen)), disp_h, disp_w, options.min_pixels, options.max_pixels)
        return disp_h, disp_w

    # The rotation is not known before a frame is decoded (see _Converter), but the budget
    # can be checked now: the sizing rules are symmetric, so a quarter turn keeps the area.
    out_h, out_w = out_size(cc.height, cc.width)
    nbytes = len(chosen) * out_h * out_w * 3
    if nbytes > limits.max_output_bytes:
        raise MediaTooLarge(
            f"{len(chosen)} frames of {out_w}x{out_h} need {nbytes} bytes; "
            f"the limit is {limits.max_output_bytes}"
        )
    conv = _Converter(len(chosen), cc.height, cc.width, out_size, limits, tb)
    wanted = {int(index.pts[i]): k for k, i in enumerate(chosen)}
    with borrowed_cores(limits.workers if reopen is not None else 1) as workers:
        got = _decode_selected(container, stream, index, chosen, wanted, conv, limits, deadline, reopen, workers)
    if not got.all():
        # Samples the seek path could not produce (no timestamps, open GOP, broken index).
        if index.has_pts:
            missing = {p: k for p, k in wanted.items() if not got[k]}
        else:
            missing = {int(i): k for k, i in enumerate(chosen)}
        logger.info("seek path missed %d of %d samples; decoding sequentially", len(missing), len(chosen))
        _decode_sequential(container, stream, missing, conv, got, deadline, by_order=not index.has_pts)
    if conv.out is None or not got.any():
        raise InvalidInput("no frame could be decoded: the video is corrupt or truncated")
    frames = conv.out
    if not got.all():
        keep = np.flatnonzero(got)
        frames, chosen, snapped = frames[keep], chosen[keep], snapped[keep]

    ordinals = _ordinals(index, times, chosen)  # frame index in the whole video
    metadata = VideoMetadata(video_backend="pyav", width=int(conv.disp_w), height=int(conv.disp_h),
                             rotation=conv.rotation, output_width=int(conv.out_w), output_height=int(conv.out_h))
    return DecodedVideo(
        frames=frames,
        timestamps=times[chosen].astype(np.float64),
        frame_indices=ordinals.astype(np.int64),
        metadata=sampled_metadata(metadata, container, stream, index, times, frame_duration, ordinals, snapped,
                                  options),
    )


def sampled_metadata(metadata: VideoMetadata, container: Any, stream: Any, index: Any, times: np.ndarray,
                     frame_duration: float, ordinals: np.ndarray, snapped: np.ndarray,
                     options: VideoOptions) -> dict[str, Any]:
    """The video_metadata document of an indexed decode: ``metadata`` (the backend and the sizes it decided)
    with the container's facts and the sampling plan (gpu_decode's plan gives the same)."""
    return replace(
        metadata,
        container=container.format.name,
        codec=stream.codec_context.name,
        fps=_fps(stream, times),
        duration=index.duration if index.duration is not None else float(times[-1] + frame_duration),
        total_num_frames=index.total_frames if index.total_frames is not None else len(times),
        frames_indices=[int(i) for i in ordinals],
        mode=options.mode,
        keyframe_snapped=[bool(s) for s in snapped],
        indexed="window" if index.partial else "whole",
        sampling=sampling_plan(times, frame_duration, options),
    ).to_dict()


# --- opening and validation (video_pipeline.media.facts, shared with the shim) ------------------------

_open = open_container  # the names gpu_decode uses


def _video_stream(container: Any, limits: DecodeLimits) -> Any:
    """The stream to decode, its header checked against ``limits`` as the shim checks it, threads set."""
    stream = video_stream(container, limits)
    check_video(facts_of(container, stream), limits)
    cc = stream.codec_context
    cc.thread_type = "AUTO"
    cc.thread_count = limits.threads
    return stream


def _frame_rotation(frame: Any) -> int:
    """Clockwise rotation (0/90/180/270) that turns a coded frame into display orientation.

    Read from the frame because FFmpeg attaches the container's display matrix to every
    decoded frame, while PyAV (>= 14) exposes no stream side data and FFmpeg (>= 6) no
    longer exports the old ``rotate`` tag: reading the stream always gave 0.
    """
    try:
        ccw = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        ccw = 0.0
    # PyAV reports FFmpeg's counterclockwise angle; we turn clockwise by its negation.
    # Flips in the matrix are ignored (phones write pure rotations).
    return int(round(-ccw / 90.0)) % 4 * 90


def _first_frame_rotation(container: Any, stream: Any) -> int:
    cc = stream.codec_context
    try:
        for n, packet in enumerate(container.demux(stream)):
            # An empty packet (end of stream) flushes the frames the decoder still holds.
            for frame in cc.decode(packet if packet.size else None):
                return _frame_rotation(frame)
            if n >= _PROBE_PACKETS:  # stay cheap on a stream whose frames never decode
                break
    except av.FFmpegError as exc:
        raise InvalidInput(f"the first frame cannot be decoded ({ffmpeg_reason(exc)})") from None
    raise InvalidInput("no frame could be decoded: the video is corrupt or truncated")


_PROBE_PACKETS = 256


# --- index pass -----------------------------------------------------------------


def _build_index(container: Any, stream: Any, limits: DecodeLimits, deadline: Deadline) -> _Index:
    pts: list[int] = []
    key: list[bool] = []
    cost: list[int] = []  # packets from the GOP's keyframe, in decode order (0 = the keyframe)
    since_key = 0
    has_pts = True
    in_decode_order = True  # every pts larger than the one before, in demux order
    slices: int | None = None
    n = 0
    try:
        for packet in container.demux(stream):
            # A truncated file ends with a short packet flagged corrupt: it is no frame to sample.
            if packet.size == 0 or packet.is_corrupt:
                continue
            n += 1
            if n > limits.max_total_frames:
                raise MediaTooLarge(f"the video has more than {limits.max_total_frames} frames (the limit)")
            if n % 256 == 0:
                deadline.check()
            p = packet.pts if packet.pts is not None else packet.dts
            if p is None:
                has_pts = False
                p = n - 1
            if pts and p <= pts[-1]:
                in_decode_order = False
            pts.append(int(p))
            key.append(bool(packet.is_keyframe))
            if packet.is_keyframe and slices is None:
                slices = h264_slices(stream, packet)
            since_key = 0 if packet.is_keyframe else since_key + 1
            cost.append(since_key)
    except av.FFmpegError as exc:
        if not pts:
            raise InvalidInput(f"the video stream cannot be read ({ffmpeg_reason(exc)})") from None
        logger.info("index stopped early after %d packets: %s", len(pts), exc)
    if not pts:
        raise InvalidInput("the video stream has no frames (empty or truncated)")
    if has_pts and in_decode_order and len(pts) > 2 and stream.codec_context.has_b_frames:
        # The codec reorders frames, yet the timestamps rise in decode order: the demuxer made
        # them up from the packet order (AVI does). Frames would come out under the wrong pts.
        has_pts = False
    arr = np.asarray(pts, dtype=np.int64)
    keys = np.asarray(key, dtype=bool)
    order = np.argsort(arr, kind="stable")
    arr, keys = arr[order], keys[order]
    costs = np.asarray(cost, dtype=np.int64)[order]
    if len(arr) > 1 and np.any(np.diff(arr) == 0):
        has_pts = False  # duplicate timestamps: the index cannot address frames reliably
        arr = np.arange(len(arr), dtype=np.int64)
    if not has_pts:
        # Without trustworthy timestamps, time is frame order at the nominal rate.
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        tb = stream.time_base or Fraction(1, 90000)
        arr = np.round(np.arange(len(arr)) / float(rate) / float(tb)).astype(np.int64)
    if duration_over := (float((arr[-1] - arr[0]) * (stream.time_base or Fraction(1, 90000))) > limits.max_duration_s):
        del duration_over
        raise MediaTooLarge(f"the video lasts more than {limits.max_duration_s:g} s (the limit)")
    return _Index(pts=arr, key=keys, has_pts=has_pts, cost=costs, slices=slices or 1)


def _build_window_index(
    container: Any, stream: Any, limits: DecodeLimits, deadline: Deadline, start: float | None, end: float | None
) -> _Index | None:
    """The index of the frames around [start, end) only, or None where that cannot be trusted.

    Reads the first packets (the video's first presentation time), seeks to the keyframe at or
    before ``start`` and demuxes until a keyframe past ``end`` plus a few packets (frames that
    an open GOP shows before its keyframe). None (the caller indexes the whole video) when the
    stream lacks timestamps or a rate, or the seek lands anywhere but a keyframe at or before
    ``start``: only trustworthy timestamps let a window stand for the whole.
    """
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    if tb is None or not rate:
        return None
    try:
        head: list[int] = []
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_corrupt:
                continue
            if packet.pts is None:
                return None
            head.append(int(packet.pts))
            if len(head) >= _HEAD_PACKETS:
                break
        if not head:
            return None
        pts0 = min(head)
        # A hair early, as sampling.window is: a keyframe exactly at start must not be missed.
        start_pts = pts0 + max(0, math.floor(((start or 0.0) - 1e-6) / tb))
        end_pts = None if end is None else pts0 + math.ceil(end / tb)
        container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        pts: list[int] = []
        key: list[bool] = []
        cost: list[int] = []
        since_key = 0
        slices = 1
        past_end = -1  # packets demuxed since the first keyframe past end (-1: none yet)
        in_decode_order = True
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_corrupt:
                continue
            if packet.pts is None:
                return None
            p = int(packet.pts)
            if not pts and not (packet.is_keyframe and p <= start_pts):
                return None  # the seek landed past the window's start, or off a keyframe
            if len(pts) >= limits.max_total_frames:
                raise MediaTooLarge(f"the video has more than {limits.max_total_frames} frames (the limit)")
            if len(pts) % 256 == 255:
                deadline.check()
            if pts and p <= pts[-1]:
                in_decode_order = False
            pts.append(p)
            key.append(bool(packet.is_keyframe))
            if len(pts) == 1:
                slices = h264_slices(stream, packet)
            since_key = 0 if packet.is_keyframe else since_key + 1
            cost.append(since_key)
            if past_end >= 0:
                past_end += 1
            elif end_pts is not None and packet.is_keyframe and p >= end_pts:
                past_end = 0
            if past_end >= _REORDER_SLACK:
                break
    except av.FFmpegError as exc:
        logger.info("window index failed (%s); indexing the whole video", exc)
        return None
    if not pts or (in_decode_order and len(pts) > 2 and stream.codec_context.has_b_frames):
        return None  # timestamps made up from packet order (see _build_index)
    arr = np.asarray(pts, dtype=np.int64)
    order = np.argsort(arr, kind="stable")
    arr = arr[order]
    if len(arr) > 1 and np.any(np.diff(arr) == 0):
        return None
    seconds = float(tb)
    if float((arr[-1] - pts0) * seconds) > limits.max_duration_s:
        raise MediaTooLarge(f"the video lasts more than {limits.max_duration_s:g} s (the limit)")
    last_ordinal = int(round(float(arr[-1] - pts0) * seconds * float(rate)))
    declared = declared_duration(container, stream)
    total = int(stream.frames or 0) or (int(round(declared * float(rate))) if declared else 0)
    return _Index(
        pts=arr,
        key=np.asarray(key, dtype=bool)[order],
        has_pts=True,
        cost=np.asarray(cost, dtype=np.int64)[order],
        pts0=pts0,
        rate=float(rate),
        total_frames=max(total, last_ordinal + 1),
        duration=declared,
        slices=slices,
    )


def _ordinals(index: _Index, times: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Each chosen frame's index in the whole video: its position when the whole video was indexed,
    else (a window) round(time x average rate), kept strictly increasing."""
    if not index.partial:
        return chosen.astype(np.int64)
    out = np.round(times[chosen] * index.rate).astype(np.int64)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    return out


# Packets read from the start for the video's first presentation time (B-frame reordering is shallow).
_HEAD_PACKETS = 32


def _frame_duration(stream: Any, times: np.ndarray) -> float:
    if len(times) > 1:
        d = float(np.median(np.diff(times)))
        if d > 0:
            return d
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.04


def _fps(stream: Any, times: np.ndarray) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(rate)
    if len(times) > 1 and times[-1] > 0:
        return (len(times) - 1) / float(times[-1])
    return 0.0


# --- decode pass ----------------------------------------------------------------


class _Converter:
    """Writes decoded frames into the output array: scale + RGB in one swscale call, then rotate.

    The array is allocated at the first frame, because only a decoded frame tells the
    rotation (see :func:`_frame_rotation`), and a quarter turn swaps the output sides.
    """

    def __init__(self, count: int, coded_h: int, coded_w: int, out_size: Callable[[int, int], tuple[int, int]],
                 limits: DecodeLimits | None = None, time_base: Fraction | None = None) -> None:
        self.count = count
        self.limits = limits or DecodeLimits()
        self.time_base = time_base
        self.coded_h, self.coded_w = coded_h, coded_w
        self.out_size = out_size
        self.out: np.ndarray | None = None
        self.rotation = self.k = 0
        self.disp_h, self.disp_w = coded_h, coded_w
        self.out_h = self.out_w = self.h = self.w = 0
        self._lock = threading.Lock()

    def _start(self, frame: Any) -> np.ndarray:
        self.rotation = _frame_rotation(frame)
        self.k = self.rotation // 90  # clockwise quarter turns
        turned = self.k % 2 == 1
        self.disp_h, self.disp_w = (self.coded_w, self.coded_h) if turned else (self.coded_h, self.coded_w)
        self.out_h, self.out_w = self.out_size(self.disp_h, self.disp_w)
        # Scale in coded orientation; rotation comes after.
        self.h, self.w = (self.out_w, self.out_h) if turned else (self.out_h, self.out_w)
        return np.empty((self.count, self.out_h, self.out_w, 3), dtype=np.uint8)

    def check(self, frame: Any) -> None:
        """Every decoded frame against the frame-size limits, not only the header's size: a stream may
        change resolution mid-way (MPEG-TS, a new SPS), and the header checked only its first one."""
        w, h = int(frame.width), int(frame.height)
        if w == self.coded_w and h == self.coded_h:
            return  # the header's size, checked in _video_stream
        limits = self.limits
        if frame_size_excess(w, h, limits) is not None:
            when = ""
            if frame.pts is not None and self.time_base is not None:
                when = f" at {float(frame.pts * self.time_base):.3f} s (pts {frame.pts})"
            raise MediaTooLarge(
                f"the frame{when} is {w}x{h}: the stream changes resolution mid-way past the limit of "
                f"{limits.max_width}x{limits.max_height} ({limits.max_frame_pixels} pixels)"
            )

    def put(self, slot: int, frame: Any) -> None:
        if self.out is None:
            with self._lock:  # GOP workers (see _decode_selected) may bring their first frames at once
                if self.out is None:
                    self.out = self._start(frame)
        rgb = frame.reformat(width=self.w, height=self.h, format="rgb24", interpolation="BICUBIC").to_ndarray()
        if self.k:
            rgb = np.rot90(rgb, k=-self.k)
        self.out[slot] = rgb


def _decode_selected(
    container: Any,
    stream: Any,
    index: _Index,
    chosen: np.ndarray,
    wanted: dict[int, int],
    conv: _Converter,
    limits: DecodeLimits,
    deadline: Deadline,
    reopen: Callable[[], Any] | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Seek-and-decode-forward, one run per GOP holding samples; returns which slots were filled.

    With ``workers`` > 1 and ``reopen`` (a context manager giving another container of the same
    input) the GOPs are split into that many contiguous shares of about equal decode cost, each
    decoded on its own container in a thread (FFmpeg's decode and scaler run without the GIL)."""
    got = np.zeros(len(chosen), dtype=bool)
    if not index.has_pts:
        return got
    key_pts = index.pts[index.key]
    if len(key_pts) == 0:
        return got
    gop_of = np.maximum(np.searchsorted(key_pts, np.asarray(sorted(wanted)), side="right") - 1, 0)
    runs: dict[int, set[int]] = {}
    for t, g in zip(sorted(wanted), gop_of, strict=True):
        runs.setdefault(int(key_pts[g]), set()).add(t)
    order = sorted(runs.items())
    shares = _shares(order, index, workers) if reopen is not None else [order]
    threads = _share_threads(limits.threads, workers if reopen is not None else 1, len(shares))
    if not stream.codec_context.is_open:  # FFmpeg takes its threads when the codec opens
        _set_threads(stream.codec_context, threads[0], index.slices)
    if len(shares) == 1:
        _decode_runs(container, stream, order, wanted, conv, got, deadline)
        return got

    def share(runs_of: list[tuple[int, set[int]]], count: int) -> None:
        assert reopen is not None
        with reopen() as other:
            other_stream = _video_stream(other, limits)
            _set_threads(other_stream.codec_context, count, index.slices)
            _decode_runs(other, other_stream, runs_of, wanted, conv, got, deadline)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="gop") as pool:
        futures = [pool.submit(share, s, n) for s, n in zip(shares[1:], threads[1:], strict=True)]
        try:
            _decode_runs(container, stream, shares[0], wanted, conv, got, deadline)
        finally:
            errors = [f.exception() for f in futures]
    for exc in errors:
        if exc is not None:
            raise exc
    return got


def _shares(order: list[tuple[int, set[int]]], index: _Index, workers: int) -> list[list[tuple[int, set[int]]]]:
    """``order`` (GOP runs by keyframe time) cut into at most ``workers`` contiguous shares of about equal
    cost, a run's cost being the packets decoded to reach its last sample (``index.cost``). One share when
    a single one would still cost ``_LONE_SHARE`` of the whole (a long GOP in a short clip): splitting
    gains less there than giving the slots to FFmpeg's threads (see _share_threads)."""
    workers = min(workers, len(order))
    if workers <= 1:
        return [order]
    where = {int(p): i for i, p in enumerate(index.pts)}
    costs = [1 + int(index.cost[where[max(pending)]]) if max(pending) in where else 1 for _, pending in order]
    total = sum(costs)
    shares: list[list[tuple[int, set[int]]]] = [[]]
    spent = share_cost = dearest = 0
    for run, cost in zip(order, costs, strict=True):
        if shares[-1] and spent + cost / 2 >= total * len(shares) / workers and len(shares) < workers:
            shares.append([])
            share_cost = 0
        shares[-1].append(run)
        spent += cost
        share_cost += cost
        dearest = max(dearest, share_cost)
    return [order] if dearest >= _LONE_SHARE * total else shares


# A split whose dearest share costs this much of the whole is not worth its second container.
_LONE_SHARE = 0.75


def _share_threads(threads: int, slots: int, shares: int) -> list[int]:
    """FFmpeg threads for each of ``shares`` shares of a decode holding ``slots`` decode slots of
    ``threads`` threads each: the slots dealt out in turn, so slots no share runs on become FFmpeg
    threads of the shares (slice or frame threads: _set_threads; 0, FFmpeg's own choice, stays)."""
    if threads <= 0:
        return [0] * shares
    return [threads * max(1, slots // shares + (i < slots % shares)) for i in range(shares)]


def _set_threads(cc: Any, count: int, slices: int) -> None:
    """``count`` FFmpeg threads on a codec not yet open: slice threads where every frame has at least that
    many slices (each thread decodes a slice of the same frame: no frame delay, no reference waits; on a
    2-slice H.264 clip 2 slice threads decode 1.15-1.3x faster than 2 frame threads), else FFmpeg's choice
    (frame threads for H.264). The frames are the same either way."""
    cc.thread_type = "SLICE" if 1 < count <= slices else "AUTO"
    cc.thread_count = count


def _decode_runs(
    container: Any,
    stream: Any,
    runs: list[tuple[int, set[int]]],
    wanted: dict[int, int],
    conv: _Converter,
    got: np.ndarray,
    deadline: Deadline,
) -> None:
    """Decodes the GOP ``runs`` (keyframe pts, sample pts still wanted) of one container, in order;
    stops at a seek that lands somewhere unexpected (the samples left are the sequential pass's)."""
    cc = stream.codec_context
    for seek_to, pending in runs:
        deadline.check()
        try:
            container.seek(seek_to, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            return
        cc.flush_buffers()
        last = max(pending)
        unsent = set(pending)
        started = False
        past_next_key = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if not started:
                    if p is not None and p > seek_to:
                        return  # the seek overshot: this index cannot be trusted
                    if p != seek_to:
                        continue  # landed before our keyframe: demux forward to it
                    started = True
                deadline.check()
                if packet.is_keyframe and p is not None and p > last:
                    past_next_key += 1
                elif past_next_key:
                    past_next_key += 1
                if past_next_key > _REORDER_SLACK:
                    break
                cc.skip_frame = "DEFAULT" if p in pending else "NONREF"
                newest = _take_all(cc.decode(packet), wanted, pending, conv, got)
                unsent.discard(p)
                if not pending or (newest is not None and newest > last) or not unsent:
                    # Every sample of this GOP is in the decoder: drain it rather than decode
                    # further frames only to push the samples out of its reorder buffer.
                    break
            if pending:
                cc.skip_frame = "DEFAULT"
                _take_all(cc.decode(None), wanted, pending, conv, got)
        except av.FFmpegError as exc:
            logger.info("decode error in the GOP at pts %d (continuing): %s", seek_to, exc)
        cc.skip_frame = "DEFAULT"
        cc.flush_buffers()


# Packets decoded past the next keyframe before giving up on a sample (open-GOP leading frames).
_REORDER_SLACK = 16
# Keyframe mode may also take the first frames decoded after a keyframe (a few packets each).
_CHEAP_DEPTH = 3


def _take_all(frames: Any, wanted: dict[int, int], pending: set[int], conv: _Converter, got: np.ndarray) -> int | None:
    newest = None
    for frame in frames:
        conv.check(frame)
        _take(frame, wanted, pending, conv, got)
        if frame.pts is not None:
            newest = frame.pts if newest is None else max(newest, frame.pts)
    return newest


def _take(frame: Any, wanted: dict[int, int], pending: set[int], conv: _Converter, got: np.ndarray) -> None:
    p = frame.pts
    if p in pending:
        slot = wanted[p]
        conv.put(slot, frame)
        got[slot] = True
        pending.discard(p)


def _decode_sequential(
    container: Any,
    stream: Any,
    wanted: dict[int, int],
    conv: _Converter,
    got: np.ndarray,
    deadline: Deadline,
    by_order: bool,
) -> None:
    """Decodes from the start, matching samples by timestamp, or by output order when
    the stream's timestamps cannot be trusted (then ``wanted`` maps ordinals to slots)."""
    try:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        pass
    cc = stream.codec_context
    cc.flush_buffers()
    cc.skip_frame = "DEFAULT"
    pending = set(wanted)
    ordinal = 0

    def take(frames: Any) -> None:
        nonlocal ordinal
        for frame in frames:
            conv.check(frame)
            key = ordinal if by_order else frame.pts
            ordinal += 1
            if key in pending:
                conv.put(wanted[key], frame)
                got[wanted[key]] = True
                pending.discard(key)

    try:
        for packet in container.demux(stream):
            deadline.check()
            take(cc.decode(packet) if packet.size else cc.decode(None))
            if not pending:
                return
        if pending:
            take(cc.decode(None))
    except av.FFmpegError as exc:
        logger.info("sequential decode stopped: %s", exc)
