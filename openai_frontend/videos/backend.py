"""Video generation on tritonserver: the ``video_generator`` model over tritonclient's asyncio gRPC client.

It shares :class:`~openai_frontend.backend.triton.TritonBackend`'s channel. A generation is
one gRPC stream to the model (decoupled): progress responses, then one holding the mp4.
Closing the iterator early (a deleted job, a client gone from /v1/videos/sync) cancels the
stream and sends the model an explicit abort by request id, because tritonserver 2.51
drops some stream cancellations; the abort is awaited (bounded), so when the iterator is
closed the model has been told to stop at its next denoising step.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np

from openai_frontend.backend.triton import TritonBackend, error_from_status, error_from_stream, tensor
from video_pipeline import contract as C
from video_pipeline.errors import EngineUnavailable, PipelineError
from video_pipeline.generation.params import Capabilities, GenerationParams

logger = logging.getLogger(__name__)

ABORT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class VideoRequest:
    """One generation: validated parameters, and the reference image's bytes for image-to-video."""

    request_id: str
    params: GenerationParams
    image: bytes | None = None


@dataclass(frozen=True)
class VideoEvent:
    """One response of the model: progress, or (``video`` set) the finished mp4 and its facts."""

    step: int
    num_steps: int
    stage: str = ""
    video: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)


class VideoBackend(Protocol):
    async def capabilities(self) -> Capabilities:
        """What the video model can be asked (asked once, then remembered)."""
        ...

    def generate(self, request: VideoRequest) -> AsyncIterator[VideoEvent]:
        """Progress events, the last one holding the video; closing the iterator early cancels the request."""
        ...


def _bytes(items: list[bytes]) -> np.ndarray:
    arr = np.empty(len(items), dtype=np.object_)
    arr[:] = items
    return arr


def generator_inputs(request: VideoRequest) -> list[Any]:
    """``video_generator`` inputs for one generation; no image, no ``image`` tensor."""
    params = json.dumps(request.params.to_json(), separators=(",", ":")).encode()
    inputs = [
        tensor(C.VIDEO_GENERATOR, C.PROMPT, _bytes([request.params.prompt.encode()])),
        tensor(C.VIDEO_GENERATOR, C.GENERATION_PARAMETERS, _bytes([params])),
    ]
    if request.image is not None:
        inputs.append(tensor(C.VIDEO_GENERATOR, C.IMAGE, _bytes([request.image])))
    return inputs


def event_from(result: Any) -> VideoEvent:
    """A :class:`VideoEvent` from one response of the model."""

    def first(name: str) -> Any:
        arr = result.as_numpy(name)
        return None if arr is None or arr.size == 0 else arr.reshape(-1)[0]

    raw_info = first(C.GENERATION_INFO)
    try:
        info = json.loads(raw_info) if raw_info else {}
    except ValueError:
        info = {}
    video = first(C.VIDEO)
    return VideoEvent(step=int(first(C.STEP) or 0), num_steps=int(first(C.NUM_STEPS) or 0),
                      stage=str(info.get("stage", "")) if isinstance(info, dict) else "",
                      video=bytes(video) if video else None, info=info if isinstance(info, dict) else {})


def error_from_model(message: str) -> PipelineError:
    """The typed error for an in-band error of the model (streams carry no status; the model's own errors
    carry their document, video_pipeline.contract.ErrorDoc)."""
    error = error_from_stream(message)
    if error.triton_code == "CANCELLED":  # not by us (we close the stream first): the model is shutting down
        return EngineUnavailable(f"the video model stopped the request: {error}")
    return error


class TritonVideoBackend:
    """:class:`VideoBackend` on the ``video_generator`` model of a tritonserver."""

    def __init__(self, triton: TritonBackend) -> None:
        self.triton = triton
        self._capabilities: Capabilities | None = None
        self._lock = asyncio.Lock()

    async def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            async with self._lock:
                if self._capabilities is None:
                    inputs = [tensor(C.VIDEO_GENERATOR, C.DESCRIBE, np.array([True], dtype=np.bool_))]
                    event = await self._once(inputs, "describe", timeout_s=30.0)
                    self._capabilities = Capabilities.from_json(event.info)
        return self._capabilities

    async def generate(self, request: VideoRequest) -> AsyncIterator[VideoEvent]:
        inputs = generator_inputs(request)
        done = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": C.VIDEO_GENERATOR.name, "inputs": inputs, "request_id": request.request_id}
            await done.wait()  # our half of the stream stays open until the video has arrived

        call = self.triton.client.stream_infer(requests())
        finished = False
        try:
            async for result, error in call:
                if error is not None:
                    finished = True  # the model ended the request itself
                    raise error_from_model(error.message())
                event = event_from(result)
                if event.video is not None:
                    finished = True
                    yield event
                    return
                yield event
            finished = True
            raise EngineUnavailable("the video_generator stream ended without a video")
        except grpc.aio.AioRpcError as exc:
            finished = True
            if exc.code() == grpc.StatusCode.CANCELLED:
                raise EngineUnavailable("the request to the video_generator model was cancelled") from None
            raise error_from_status(str(exc.code()), exc.details() or str(exc.code())) from None
        finally:
            done.set()
            if not finished:
                logger.info("video request %s ended early; cancelling it in tritonserver", request.request_id)
                call.cancel()
                await self.abort(request.request_id)

    async def abort(self, request_id: str) -> bool:
        """Asks the model to stop ``request_id`` (queued or running); True when it was there to stop."""
        inputs = [tensor(C.VIDEO_GENERATOR, C.ABORT_REQUEST_ID, _bytes([request_id.encode()]))]
        try:
            event = await self._once(inputs, f"{request_id}-abort", timeout_s=ABORT_TIMEOUT_S)
        except (PipelineError, TimeoutError) as exc:
            logger.warning("abort of video request %s failed: %s", request_id, exc)
            return False
        return bool(event.info.get("aborted"))

    async def _once(self, inputs: list[Any], request_id: str, timeout_s: float) -> VideoEvent:
        """The first response of a one-response request (describe, abort)."""
        answered = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": C.VIDEO_GENERATOR.name, "inputs": inputs, "request_id": request_id}
            await answered.wait()

        call = self.triton.client.stream_infer(requests())
        try:
            async with asyncio.timeout(timeout_s):
                async for result, error in call:
                    if error is not None:
                        raise error_from_model(error.message())
                    return event_from(result)
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(str(exc.code()), exc.details() or str(exc.code())) from None
        finally:
            answered.set()
            call.cancel()
        raise EngineUnavailable("the video_generator model did not answer")


class UnavailableVideoBackend:
    """For apps whose backend has no video model: every video request is a 503."""

    async def capabilities(self) -> Capabilities:
        raise EngineUnavailable("video generation is not available on this server (no video_generator model)")

    async def generate(self, request: VideoRequest) -> AsyncIterator[VideoEvent]:
        raise EngineUnavailable("video generation is not available on this server (no video_generator model)")
        yield  # an async generator


def video_backend_for(backend: object) -> VideoBackend:
    """The video backend that goes with the shim's backend: the same tritonserver, or none."""
    if isinstance(backend, TritonBackend):
        return TritonVideoBackend(backend)
    return UnavailableVideoBackend()
