"""Where to resize: in the decoder's pixel path (one swscale call: YUV -> RGB + scale) or after.

    python perf/bench_resize.py      -> perf/RESULTS.md "Resize path"

Decodes the same 16 frames of a generated 1080p H.264 clip, then times only the
conversion of each decoded frame to the engine's size (448x448 budget, factor 28):
(a) ``frame.reformat(w, h, rgb24)`` in the decoder, as video_decoder does;
(b) ``frame.to_ndarray(rgb24)`` at native size, then FFmpeg's scaler on the RGB
array (the preprocessor's fallback); (c) native RGB then PIL bicubic resize.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import replace_section  # noqa: E402
from tests.videos import ClipSpec, make_video  # noqa: E402
from video_pipeline.media.resize import fit_pixel_budget, resize_frames  # noqa: E402


def decoded_frames(data: bytes, n: int = 16) -> list:
    with av.open(io.BytesIO(data)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f)
            if len(frames) == n:
                return frames
    return frames


def main() -> int:
    data = make_video(ClipSpec(width=1920, height=1080, fps=30, num_frames=16, gop=16))
    frames = decoded_frames(data)
    h, w = fit_pixel_budget(1080, 1920, 28, 4 * 28 * 28, 448 * 448)
    ways = {
        "decoder pixel path: reformat(w, h, rgb24)": lambda f: f.reformat(
            width=w, height=h, format="rgb24", interpolation="BICUBIC"
        ).to_ndarray(),
        "native rgb24, then FFmpeg scaler on RGB": lambda f: resize_frames(
            f.to_ndarray(format="rgb24")[None], h, w
        )[0],
        "native rgb24, then PIL bicubic": lambda f: np.asarray(
            Image.fromarray(f.to_ndarray(format="rgb24")).resize((w, h), Image.BICUBIC)
        ),
    }
    results = {name: [] for name in ways}
    for _ in range(5):  # interleaved repeats
        for name, fn in ways.items():
            t = time.perf_counter()
            for f in frames:
                fn(f)
            results[name].append((time.perf_counter() - t) * 1000 / len(frames))
    lines = [
        f"16 decoded 1920x1080 H.264 frames -> {w}x{h} RGB (448x448 budget, factor 28), ms per frame, "
        "5 interleaved repeats. Command: `python perf/bench_resize.py`.",
        "",
        "| path | ms/frame min | ms/frame median | × decoder path |",
        "|---|---:|---:|---:|",
    ]
    base = statistics.median(results[next(iter(ways))])
    for name, xs in results.items():
        lines.append(
            f"| {name} | {min(xs):.2f} | {statistics.median(xs):.2f} | {statistics.median(xs) / base:.2f} |"
        )
    lines += [
        "",
        "The decoder resizes (video_decoder scales in FFmpeg's pixel path); the preprocessor only "
        "resizes frames that arrive at another size (then with FFmpeg's scaler, faster than PIL).",
    ]
    body = "\n".join(lines)
    replace_section(ROOT / "perf" / "RESULTS.md", "Resize path", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
