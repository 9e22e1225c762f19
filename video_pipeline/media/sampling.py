"""Which frames to take: pure functions on frame timestamps.

Works on timestamps, not frame-index arithmetic, so variable frame rate
videos are sampled at the right moments. See :mod:`video_pipeline.media.options`
for the semantics of ``num_frames``/``fps``/``max_frames``.
"""

from __future__ import annotations

import numpy as np

from video_pipeline.contract import SamplingPlan
from video_pipeline.errors import InvalidInput
from video_pipeline.media.options import DEFAULT_FPS, VideoOptions


def window(times: np.ndarray, options: VideoOptions) -> np.ndarray:
    """Indices (into ``times``, sorted ascending) of the frames inside [start, end)."""
    lo = 0 if options.start is None else int(np.searchsorted(times, options.start - 1e-6, side="left"))
    hi = len(times) if options.end is None else int(np.searchsorted(times, options.end - 1e-6, side="left"))
    if hi <= lo:
        last = float(times[-1]) if len(times) else 0.0
        raise InvalidInput(
            f"no frames between start={options.start} and end={options.end}; "
            f"the video's frames span 0..{last:.3f} s"
        )
    return np.arange(lo, hi)


def target_times(first: float, last: float, frame_duration: float, options: VideoOptions, available: int) -> np.ndarray:
    """The moments (seconds) to sample between the first and last frame of the window."""
    rule, fps, n = _rule(first, last, frame_duration, options, available)
    if rule == "fps":
        return first + np.arange(n) / fps
    return np.linspace(first, last, n) if n > 1 else np.array([first])


def _rule(first: float, last: float, frame_duration: float, options: VideoOptions, available: int,
          ) -> tuple[str, float, int]:
    """(rule, fps, frame count) of a window: ``num_frames`` (uniform), ``fps`` (one frame every
    1/fps s) or ``fps_capped`` (fps asked for more frames than the cap: the cap, uniform)."""
    if options.num_frames is not None and options.fps is None:
        return "num_frames", 0.0, min(options.num_frames, available)
    fps = options.fps if options.fps is not None else DEFAULT_FPS
    span = max(0.0, last - first) + frame_duration
    cap = min(options.frame_cap, available)
    # A huge fps makes span * fps infinite and round(inf) raises; past the cap it is capped anyway.
    n = max(1, round(min(span * fps, cap + 1.0)))
    if n <= cap:
        return "fps", fps, n
    return "fps_capped", fps, cap


def sampling_plan(times: np.ndarray, frame_duration: float, options: VideoOptions) -> SamplingPlan:
    """How ``options`` sampled this video, for clients to see: the rule that applied, the fps and
    cap in force (defaults included) and the window. ``capped_by`` names the setting that capped
    fps sampling: ``num_frames`` when given with fps, else ``max_frames`` (or ``frames`` when the
    window holds fewer frames than asked)."""
    win = window(times, options)
    wt = times[win]
    rule, fps, _n = _rule(float(wt[0]), float(wt[-1]), frame_duration, options, len(win))
    capped_by = None
    if rule == "fps_capped":
        if options.frame_cap >= len(win):
            capped_by = "frames"
        else:
            capped_by = "num_frames" if options.num_frames is not None else "max_frames"
    elif rule == "num_frames" and options.num_frames is not None and options.num_frames > len(win):
        capped_by = "frames"
    return SamplingPlan(
        rule="fps" if rule == "fps_capped" else rule,
        fps=fps if rule != "num_frames" else None,
        num_frames=options.num_frames,
        max_frames=options.frame_cap if rule != "num_frames" else None,
        capped_by=capped_by,
        start=options.start,
        end=options.end,
        mode=options.mode,
    )


def nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the index of the frame whose timestamp is nearest (ties go earlier)."""
    idx = np.searchsorted(times, targets, side="left")
    idx = np.clip(idx, 1, max(1, len(times) - 1)) if len(times) > 1 else np.zeros_like(idx)
    if len(times) > 1:
        left = times[idx - 1]
        right = times[idx]
        idx = np.where(np.abs(targets - left) <= np.abs(right - targets), idx - 1, idx)
    return idx.astype(np.int64)


def select_frames(times: np.ndarray, frame_duration: float, options: VideoOptions) -> np.ndarray:
    """Indices into ``times`` of the frames to sample, ascending and unique."""
    if len(times) == 0:
        raise InvalidInput("the video has no frames")
    win = window(times, options)
    wt = times[win]
    targets = target_times(float(wt[0]), float(wt[-1]), frame_duration, options, len(win))
    if options.num_frames is not None and options.fps is None:
        return win[distinct_nearest(wt, targets)]
    chosen = win[nearest(wt, targets)]
    return np.unique(chosen)


def distinct_nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Like :func:`nearest`, but each of the (ascending) targets gets a frame of its own.

    ``num_frames`` promises that many frames. With a variable frame rate, uniform targets
    can share a nearest frame (several fall in one long gap), and de-duplicating returned
    fewer frames than asked; so each target takes the nearest frame after the previous
    pick that still leaves one frame for every later target. Where nearest frames are
    already distinct (constant frame rate) the result is the same as :func:`nearest`.
    """
    idx = nearest(times, targets)
    n, m = len(targets), len(times)
    if n > m or np.all(np.diff(idx) > 0):
        return idx
    prev = -1
    for k in range(n):
        # times is sorted, so the nearest frame within [lo, hi] is the global nearest clipped.
        idx[k] = min(max(int(idx[k]), prev + 1), m - (n - k))
        prev = int(idx[k])
    return idx


def snap_to_keyframes(
    times: np.ndarray,
    chosen: np.ndarray,
    key_indices: np.ndarray,
    tolerance: float,
    cheap: np.ndarray | None = None,
    cost: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe mode: moves each chosen frame to the cheapest unused frame within ``tolerance`` s.

    Candidates are the keyframes, plus ``cheap`` (frames a few packets after a keyframe in
    decode order, ``cost`` packets each) when given, so that more samples than keyframes can
    still avoid decoding a whole GOP. Among candidates in range the lowest cost wins, then the
    nearest. Returns (indices, snapped) where ``snapped[i]`` tells whether frame i is such a
    stand-in. Frames with no free candidate near enough keep their exact index, so the count
    and the order are preserved and every timestamp stays true.
    """
    out = chosen.copy()
    snapped = np.zeros(len(chosen), dtype=bool)
    cands = np.union1d(key_indices, cheap if cheap is not None else np.zeros(0, dtype=np.int64)).astype(np.int64)
    if len(cands) == 0:
        return out, snapped
    costs = cost if cost is not None else np.zeros(len(times), dtype=np.int64)
    cand_times = times[cands]
    # A chosen frame that is itself a candidate keeps it. Otherwise an earlier sample could
    # take it, leaving this one unsnapped on the same index: two samples on one frame, and the
    # de-duplication below would drop one (the count must not change).
    own = set(np.intersect1d(chosen, cands).tolist())
    used: set[int] = set(own)
    for i, idx in enumerate(chosen):
        if int(idx) in own:
            snapped[i] = True
            continue
        t = float(times[idx])
        lo = int(np.searchsorted(cand_times, t - tolerance - 1e-9, side="left"))
        hi = int(np.searchsorted(cand_times, t + tolerance + 1e-9, side="right"))
        best, best_key = None, None
        for j in range(lo, hi):
            c = int(cands[j])
            if c in used:
                continue
            rank = (int(costs[c]), abs(float(cand_times[j]) - t))
            if best_key is None or rank < best_key:
                best, best_key = c, rank
        if best is not None:
            used.add(best)
            out[i] = best
            snapped[i] = True
    order = np.argsort(out, kind="stable")
    out, snapped = out[order], snapped[order]
    keep = np.concatenate(([True], out[1:] != out[:-1])) if len(out) else np.zeros(0, dtype=bool)
    return out[keep], snapped[keep]
