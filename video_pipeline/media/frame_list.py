"""Frame lists (a client's own stills, ``data:video/jpeg;base64,<frame>,<frame>,...``) -> sampled frames.

The client already sampled these frames, so there is no container: each still is
decoded on its own (PIL) and the list is sampled by time like a video. As in vLLM,
the frames are taken to be ``fps`` apart (the request's ``fps``, default 1).
``num_frames`` picks that many, spread uniformly; ``start``/``end`` select by
those times. The result has the video_decoder's output shape, so the
video_preprocessor sizes it exactly as it sizes a decoded video.

On the wire a frame list is one ``video`` element (see :mod:`video_pipeline.contract`,
``FRAME_LIST``): the stills in order, each as a 4-byte little-endian length and
then its bytes -- Triton's own BYTES serialisation, so nothing new to parse.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from video_pipeline.contract import VideoMetadata, VideoOptionsDoc
from video_pipeline.errors import InvalidInput
from video_pipeline.media.decode import Deadline, DecodedVideo
from video_pipeline.media.facts import check_frame_size, open_image
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.media.sampling import select_frames

DEFAULT_LIST_FPS = 1.0
_LENGTH = struct.Struct("<I")


def encode(stills: Sequence[bytes]) -> bytes:
    """One ``video`` element holding ``stills`` (each length-prefixed, in order)."""
    return b"".join(_LENGTH.pack(len(s)) + bytes(s) for s in stills)


def split(data: bytes) -> list[bytes]:
    """The stills of an encoded frame list; a truncated or overlong element is refused."""
    out, pos, view = [], 0, memoryview(data)
    while pos < len(view):
        if pos + 4 > len(view):
            raise InvalidInput("the frame list is truncated (a length prefix is cut short)")
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + size > len(view):
            raise InvalidInput(f"the frame list is truncated (frame {len(out)} claims {size} bytes)")
        out.append(bytes(view[pos:pos + size]))
        pos += size
    return out


def decode_frame_list(stills: Sequence[bytes], options: Mapping[str, Any],
                      limits: DecodeLimits | None = None) -> DecodedVideo:
    """The sampled RGB frames of one frame list, with the metadata video_decoder gives a video.

    ``options`` are the request's video options as sent (not the decoder's defaults: a frame list
    has its own rate). Each still's size is checked against ``limits`` (and PIL's bomb guard) before
    its pixels are decoded; past ``limits.decode_timeout_s`` the decode stops before the next still
    (:class:`~video_pipeline.errors.DecodeTimeout`).
    """
    limits = limits or DecodeLimits()
    if not stills:
        raise InvalidInput("the frame list is empty")
    sent = VideoOptionsDoc.from_dict(options)
    fps = float(sent.fps or DEFAULT_LIST_FPS)
    total = len(stills)
    times = np.arange(total, dtype=np.float64) / fps
    # Sampling options in our semantics (only these apply to a list); fps sampling at the list's own rate
    # keeps every frame.
    asked = VideoOptionsDoc(num_frames=sent.num_frames, fps=sent.fps, max_frames=sent.max_frames, start=sent.start,
                            end=sent.end)
    sampling = VideoOptions.from_dict(asked.to_dict())
    if sampling.num_frames is None and sampling.fps is None:
        sampling = replace(sampling, fps=fps)
    chosen = select_frames(times, 1.0 / fps, sampling)
    pictures = np.stack(_decode_all([stills[i] for i in chosen], [int(i) for i in chosen], limits))
    height, width = int(pictures.shape[1]), int(pictures.shape[2])
    metadata = VideoMetadata(video_backend="jpeg_sequence", width=width, height=height, fps=fps, duration=total / fps,
                             total_num_frames=total, output_width=width, output_height=height)
    return DecodedVideo(frames=pictures, timestamps=times[chosen], frame_indices=chosen.astype(np.int64),
                        metadata=metadata.to_dict())


def _decode_all(encoded: list[bytes], indices: list[int], limits: DecodeLimits) -> list[np.ndarray]:
    # Checked before each still, so a list that runs past the limit stops there, not after its last still.
    deadline = Deadline(limits.decode_timeout_s, "decoding the frame list")
    out = []
    size = None
    for data, i in zip(encoded, indices, strict=True):
        deadline.check()
        what = f"frame {i} of the frame list"
        with open_image(data, what) as img:
            check_frame_size(img.size[0], img.size[1], limits, what)
            img.load()
            rgb = np.asarray(img.convert("RGB"))
        if size is None:
            size = rgb.shape
        elif rgb.shape != size:
            raise InvalidInput(f"frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is {size[1]}x{size[0]}; "
                               "all frames of a list must have one size")
        out.append(rgb)
    return out
