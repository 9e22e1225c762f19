"""The backend on a real tritonserver, through tritonclient's asyncio gRPC client.

Never Triton's HTTP JSON: tritonserver 2.51 crashes on JSON bodies above ~4 MB.
Generation streams ``llm`` directly, so cancelling the gRPC call (a client that
left) reaches the engine — Triton 2.51 does not pass a cancel into an ensemble step.
Videos go to ``llm`` as container bytes (or paths, or frame lists), decoded there by
video_media inside tritonserver; only text and one video_info come back. Dry runs
(and ``frames_through_shim``, the older path) call ``video_media`` (one unary call)
and send its frames to ``llm``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from openai_frontend.backend.base import Delta, LlmRequest, MediaFailed
from openai_frontend.logging_config import current_request_id
from video_pipeline import contract as C
from video_pipeline.errors import (
    EngineUnavailable,
    InvalidInput,
    MediaTooLarge,
    PipelineError,
    UnsupportedMedia,
)

logger = logging.getLogger(__name__)

_WIRE_DTYPES = {"TYPE_STRING": "BYTES", "TYPE_UINT8": "UINT8", "TYPE_BOOL": "BOOL"}
# The core's budget errors all name "the limit" (video_pipeline.media.decode, steps, options);
# Triton carries them as INVALID_ARG, which has no 413 of its own.
_TOO_LARGE = re.compile(r"\bthe limit\b|\ballows at most\b", re.IGNORECASE)
# In-band stream errors carry a message only (no status); these mean "the model cannot serve now".
_UNAVAILABLE = re.compile(
    r"not healthy|unavailable|shutting down|unknown model|is not ready|not found|no longer", re.IGNORECASE
)


def tensor(model: C.ModelContract, name: str, value: np.ndarray) -> InferInput:
    """An input of ``model`` named ``name``, typed as the contract says."""
    spec = next(t for t in model.inputs if t.name == name)
    t = InferInput(name, list(value.shape), _WIRE_DTYPES[spec.dtype])
    t.set_data_from_numpy(value)
    return t


def _bytes_array(items: list[bytes]) -> np.ndarray:
    arr = np.empty(len(items), dtype=np.object_)
    arr[:] = items
    return arr


def _json_array(items: list[Any]) -> np.ndarray:
    return _bytes_array([json.dumps(x, separators=(",", ":")).encode() for x in items])


def media_inputs(videos: list[bytes], options: list[dict[str, Any]]) -> list[InferInput]:
    """``video_media`` inputs: N containers and one options JSON per video."""
    return [
        tensor(C.VIDEO_MEDIA, C.VIDEO, _bytes_array(videos)),
        tensor(C.VIDEO_MEDIA, C.VIDEO_OPTIONS, _json_array(options)),
    ]


def llm_inputs(request: LlmRequest) -> list[InferInput]:
    """``llm`` inputs for one request; absent media are absent tensors, not empty ones."""
    inputs = [
        tensor(C.LLM, C.MESSAGES, _json_array([request.messages])),
        tensor(C.LLM, C.SAMPLING_PARAMETERS, _json_array([request.sampling])),
        tensor(C.LLM, C.STREAM, np.array([request.stream], dtype=np.bool_)),
    ]
    if request.videos:
        inputs.append(tensor(C.LLM, C.VIDEO, _bytes_array(request.videos)))
        inputs.append(tensor(C.LLM, C.VIDEO_OPTIONS, _json_array(request.video_options)))
    elif request.infos:
        inputs.append(tensor(C.LLM, C.VIDEO_FRAMES, np.ascontiguousarray(request.frames, dtype=np.uint8)))
        inputs.append(tensor(C.LLM, C.VIDEO_INFO, _json_array(request.infos)))
    if request.images:
        inputs.append(tensor(C.LLM, C.IMAGE, _bytes_array(request.images)))
    if request.audios:
        inputs.append(tensor(C.LLM, C.AUDIO, _bytes_array(request.audios)))
    if request.image_embeds:
        inputs.append(tensor(C.LLM, C.IMAGE_EMBEDS, _bytes_array(request.image_embeds)))
    return inputs


def delta_from(outputs: dict[str, np.ndarray | None]) -> Delta | None:
    """A :class:`Delta` from one llm response's outputs (None for a response without text)."""
    text = outputs.get(C.TEXT_OUTPUT)
    if text is None:
        return None

    def scalar(name: str) -> Any:
        arr = outputs.get(name)
        return None if arr is None or arr.size == 0 else arr.reshape(-1)[0]

    def as_str(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    finish = as_str(scalar(C.FINISH_REASON))
    return Delta(
        text=as_str(text.reshape(-1)[0]),
        index=int(scalar(C.CHOICE_INDEX) or 0),
        finish_reason=finish or None,
        prompt_tokens=int(scalar(C.NUM_INPUT_TOKENS) or 0),
        completion_tokens=int(scalar(C.NUM_OUTPUT_TOKENS) or 0),
        video_tokens=int(scalar(C.NUM_VIDEO_TOKENS) or 0),
    )


def error_from_status(status: str | None, message: str) -> PipelineError:
    """The typed error for a Triton/gRPC status name (``StatusCode.INVALID_ARGUMENT`` or ``INVALID_ARGUMENT``)."""
    code = (status or "").rsplit(".", 1)[-1].upper()
    if code == "INVALID_ARGUMENT":
        return MediaTooLarge(message) if _TOO_LARGE.search(message) else InvalidInput(message)
    if code == "UNIMPLEMENTED":
        return UnsupportedMedia(message)
    if code in ("UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN_MODEL"):
        return EngineUnavailable(f"tritonserver cannot serve the request: {message}")
    return PipelineError(f"tritonserver failed: {message}")


def error_from_triton_code(code: str, message: str) -> PipelineError:
    """The typed error for a Triton error code name (pb_utils.TritonError's: INVALID_ARG, UNSUPPORTED ...)."""
    if code == "INVALID_ARG":
        return MediaTooLarge(message) if _TOO_LARGE.search(message) else InvalidInput(message)
    if code == "UNSUPPORTED":
        return UnsupportedMedia(message)
    if code in ("UNAVAILABLE", "NOT_FOUND"):
        return EngineUnavailable(message)
    return PipelineError(message)


def error_from_stream(message: str) -> PipelineError:
    """The typed error for an in-band stream error: gRPC streams carry the message without a status
    (llm's media errors carry their code in the message: :class:`MediaFailed`)."""
    media = C.parse_media_error(message)
    if media is not None:
        return MediaFailed(error_from_triton_code(*media))
    if message.startswith("internal error"):
        return PipelineError(message)
    if _UNAVAILABLE.search(message):
        return EngineUnavailable(message)
    return MediaTooLarge(message) if _TOO_LARGE.search(message) else InvalidInput(message)


class TritonBackend:
    """:class:`~openai_frontend.backend.base.Backend` on tritonserver's gRPC endpoint."""

    def __init__(self, url: str, *, timeout_s: float = 600.0, frames_through_shim: bool = False,
                 channel_args: list[tuple[str, Any]] | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.frames_through_shim = frames_through_shim
        self.channel_args = channel_args  # None: tritonclient's defaults
        self._client: InferenceServerClient | None = None
        self._media_params: dict[str, Any] | None = None
        self._aborts: set[asyncio.Task[None]] = set()  # abort requests in flight (kept referenced)

    @property
    def client(self) -> InferenceServerClient:
        # Created on first use: a grpc.aio channel belongs to the event loop that runs the app.
        if self._client is None:
            self._client = InferenceServerClient(self.url, channel_args=self.channel_args)
        return self._client

    async def ready(self) -> bool:
        try:
            for model in (C.LLM.name, C.VIDEO_MEDIA.name):
                if not await self.client.is_model_ready(model, client_timeout=5):
                    return False
            return True
        except (InferenceServerException, grpc.RpcError, OSError):
            return False

    async def describe_media(self) -> dict[str, Any]:
        if self._media_params is None:
            describe = InferInput(C.DESCRIBE, [1], "BOOL")
            describe.set_data_from_numpy(np.array([True]))
            try:
                config = await self.client.get_model_config(C.VIDEO_PREPROCESSOR.name, as_json=True,
                                                            client_timeout=10)
                result = await self.client.infer(C.VIDEO_PREPROCESSOR.name, [describe], client_timeout=30)
            except InferenceServerException as exc:
                raise error_from_status(exc.status(), exc.message()) from None
            params = config.get("config", {}).get("parameters", {})
            described = json.loads(result.as_numpy(C.VIDEO_INFO).reshape(-1)[0])
            self._media_params = {"parameters": {k: str(v.get("string_value", "")) for k, v in params.items()},
                                  **described}
        return self._media_params

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        try:
            # The HTTP request's id (X-Request-Id): Triton hands it to the ensemble's steps, whose logs show it.
            result = await self.client.infer(C.VIDEO_MEDIA.name, media_inputs(videos, options),
                                             client_timeout=self.timeout_s, request_id=current_request_id())
        except InferenceServerException as exc:
            raise error_from_status(exc.status(), exc.message()) from None
        frames = result.as_numpy(C.VIDEO_FRAMES)
        infos = [json.loads(x) for x in result.as_numpy(C.VIDEO_INFO).reshape(-1)]
        return frames, infos

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        inputs = llm_inputs(request)
        sent_all = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": C.LLM.name, "inputs": inputs, "request_id": request.request_id}
            # Keep our half of the stream open until every choice has ended.
            await sent_all.wait()

        # aio's stream_infer cannot ask for Triton's empty final response, so the end of the
        # request is the moment every one of the n choices has reported its finish_reason.
        pending = set(range(request.n))
        call = self.client.stream_infer(requests())
        try:
            async for result, error in call:
                if error is not None:
                    raise error_from_stream(error.message())
                info = result.as_numpy(C.VIDEO_INFO)
                if info is not None:  # llm decoded the request's videos: their plan, before any text
                    yield Delta("", video_info=[json.loads(x) for x in info.reshape(-1)])
                    continue
                names = (C.TEXT_OUTPUT, C.FINISH_REASON, C.CHOICE_INDEX, C.NUM_INPUT_TOKENS,
                         C.NUM_OUTPUT_TOKENS, C.NUM_VIDEO_TOKENS)
                delta = delta_from({n: result.as_numpy(n) for n in names})
                if delta is None:
                    continue
                yield delta
                if delta.finish_reason is not None:
                    pending.discard(delta.index)
                    if not pending:
                        return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                raise EngineUnavailable("the request to the llm model was cancelled") from None
            raise error_from_status(str(exc.code()), exc.details() or str(exc.code())) from None
        finally:
            if pending:
                # Early exit (client gone, error, cancelled task): cancelling the RPC cancels
                # the Triton request, and the llm model aborts it in the engine.
                # (A task cancelled while awaiting a response has had grpc.aio cancel the call already.)
                logger.info("request %s ended early; cancelling it in tritonserver", request.request_id)
                call.cancel()
                # tritonserver 2.51 drops some stream cancels; an explicit abort request by id
                # stops the generation either way (a no-op when the cancel already did).
                task = asyncio.get_running_loop().create_task(self.abort(request.request_id))
                self._aborts.add(task)
                task.add_done_callback(self._aborts.discard)
            sent_all.set()

    async def abort(self, request_id: str, timeout_s: float = 10.0) -> None:
        """Asks the llm model to stop the running request ``request_id`` (see its abort_request_id)."""
        if not request_id:
            return
        inputs = [tensor(C.LLM, C.ABORT_REQUEST_ID, _bytes_array([request_id.encode()]))]
        answered = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": C.LLM.name, "inputs": inputs, "request_id": f"{request_id}-abort"}
            await answered.wait()

        call = self.client.stream_infer(requests())
        try:
            async with asyncio.timeout(timeout_s):
                async for _result, error in call:
                    if error is not None:
                        logger.warning("abort of %s failed: %s", request_id, error.message())
                    break
        except Exception as exc:  # noqa: BLE001 - best effort: the client is gone already
            logger.warning("abort of %s failed: %s", request_id, exc)
        finally:
            answered.set()
            call.cancel()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
