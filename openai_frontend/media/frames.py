"""A fetched video as the ``video`` element and ``video_options`` document the media models take.

The shim decodes no media: container bytes go as they are; an uploaded video that
tritonserver's decoder reads itself goes by path (an empty element, ``"path"`` in its
options); a frame list (``data:video/jpeg;base64,<frame>,<frame>,...``) goes as one
element holding its stills, still encoded, with ``"frame_list": true``
(:mod:`video_pipeline.media.frame_list` defines the encoding, decodes and samples it
inside video_decoder).
"""

from __future__ import annotations

from typing import Any

from openai_frontend.media.urls import FrameList, StoredVideo
from video_pipeline.contract import VideoOptionsDoc
from video_pipeline.media import frame_list


def wire_video(data: bytes | FrameList | StoredVideo, options: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(``video`` element, ``video_options`` document) of one fetched video with its request options."""
    if isinstance(data, StoredVideo):
        return b"", {**options, **VideoOptionsDoc(path=data.remote).to_dict()}
    if isinstance(data, FrameList):
        return frame_list.encode(data.frames), {**options, **VideoOptionsDoc(frame_list=True).to_dict()}
    return bytes(data), dict(options)
