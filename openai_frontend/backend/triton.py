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
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from openai_frontend.backend.base import Delta, LlmRequest, MediaFailed, TokenizeRequest
from openai_frontend.logging_config import current_request_id
from video_pipeline import contract as C
from video_pipeline.errors import (
    EngineUnavailable,
    InvalidInput,
    PipelineError,
    UnsupportedMedia,
    from_doc,
)

logger = logging.getLogger(__name__)

_WIRE_DTYPES = {"TYPE_STRING": "BYTES", "TYPE_UINT8": "UINT8", "TYPE_BOOL": "BOOL", "TYPE_INT64": "INT64"}


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
        tensor(C.LLM, C.TEXT_INPUT, _bytes_array([request.prompt.encode()])) if request.prompt is not None
        else tensor(C.LLM, C.MESSAGES, _json_array([request.messages])),
        tensor(C.LLM, C.SAMPLING_PARAMETERS, _json_array([request.sampling])),
        tensor(C.LLM, C.STREAM, np.array([request.stream], dtype=np.bool_)),
    ]
    if request.chat_template_kwargs:
        inputs.append(tensor(C.LLM, C.CHAT_TEMPLATE_KWARGS, _json_array([request.chat_template_kwargs])))
    if request.tools is not None:
        inputs.append(tensor(C.LLM, C.TOOLS, _json_array([request.tools])))
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


def tokenize_inputs(request: TokenizeRequest) -> list[InferInput]:
    """``llm`` inputs of a tokenize request: the prompt (or messages, with their template kwargs) and the options."""
    inputs = [tensor(C.LLM, C.TEXT_INPUT, _bytes_array([request.prompt.encode()])) if request.prompt is not None
              else tensor(C.LLM, C.MESSAGES, _json_array([request.messages])),
              tensor(C.LLM, C.TOKENIZE, _json_array([request.options]))]
    if request.chat_template_kwargs:
        inputs.append(tensor(C.LLM, C.CHAT_TEMPLATE_KWARGS, _json_array([request.chat_template_kwargs])))
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
    logprobs = scalar(C.LOGPROBS)
    tool_calls = scalar(C.TOOL_CALLS)
    return Delta(
        text=as_str(text.reshape(-1)[0]),
        index=int(scalar(C.CHOICE_INDEX) or 0),
        finish_reason=finish or None,
        prompt_tokens=int(scalar(C.NUM_INPUT_TOKENS) or 0),
        completion_tokens=int(scalar(C.NUM_OUTPUT_TOKENS) or 0),
        video_tokens=int(scalar(C.NUM_VIDEO_TOKENS) or 0),
        logprobs=None if logprobs is None else json.loads(logprobs),
        tool_calls=None if tool_calls is None else json.loads(tool_calls),
    )


# gRPC statuses of Triton's own refusals (our models' errors carry their document instead): the model or
# the server cannot serve now. A retry may succeed unless the request was cancelled or ran out of time.
_UNAVAILABLE = {"UNAVAILABLE": True, "NOT_FOUND": True, "UNKNOWN_MODEL": True, "DEADLINE_EXCEEDED": False,
                "CANCELLED": False}


def error_from_triton(message: str, status: str | None = None) -> PipelineError:
    """The one reading of a Triton error: the typed error our models wrote into the message as a document
    (video_pipeline.contract.ErrorDoc: class, HTTP status, the item and parameter at fault); without one,
    the error is tritonserver's own, read by its gRPC ``status`` (``StatusCode.UNAVAILABLE`` or
    ``UNAVAILABLE``): a gRPC stream's in-band errors have none, and those are about serving (an unknown
    or unloaded model, one not ready, a stub gone), so they read as unavailable."""
    doc = C.parse_error(message)
    if doc is not None:
        return from_doc(doc)
    code = (status or "UNAVAILABLE").rsplit(".", 1)[-1].upper()
    if code == "INVALID_ARGUMENT":
        return InvalidInput(message)
    if code == "UNIMPLEMENTED":
        return UnsupportedMedia(message)
    if code in _UNAVAILABLE:
        return EngineUnavailable(f"tritonserver cannot serve the request: {message}", transient=_UNAVAILABLE[code])
    return PipelineError(f"tritonserver failed: {message}")


def error_from_status(status: str | None, message: str) -> PipelineError:
    """The typed error of a unary call's or a stream's gRPC failure (``StatusCode.INVALID_ARGUMENT`` ...)."""
    return error_from_triton(message, status or "UNKNOWN")


def error_from_stream(message: str) -> PipelineError:
    """The typed error of an in-band stream error (no status): one about a media item (contract.ErrorDoc's
    ``kind``: llm's media step, its audio and image_embeds parts) is a :class:`MediaFailed`, for the
    service to name the part."""
    error = error_from_triton(message)
    return MediaFailed(error) if error.kind is not None else error


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
                         C.NUM_OUTPUT_TOKENS, C.NUM_VIDEO_TOKENS, C.LOGPROBS, C.TOOL_CALLS)
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
                raise EngineUnavailable("the request to the llm model was cancelled", transient=False) from None
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

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        result = await self._one_response(tokenize_inputs(request), request.request_id)
        tokens = result.as_numpy(C.TOKENS)
        if tokens is None:
            raise PipelineError("the llm model answered a tokenize request without tokens")
        return json.loads(tokens.reshape(-1)[0])

    async def detokenize(self, token_ids: list[int], request_id: str) -> str:
        ids = tensor(C.LLM, C.TOKEN_IDS, np.asarray(token_ids, dtype=np.int64).reshape(-1))
        result = await self._one_response([ids], request_id)
        text = result.as_numpy(C.TEXT_OUTPUT)
        if text is None:
            raise PipelineError("the llm model answered a detokenize request without text")
        value = text.reshape(-1)[0]
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    async def _one_response(self, inputs: list[InferInput], request_id: str) -> Any:
        """The one response of an llm request that answers once (tokenize, detokenize)."""
        answered = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": C.LLM.name, "inputs": inputs, "request_id": request_id}
            await answered.wait()

        call = self.client.stream_infer(requests())
        try:
            async with asyncio.timeout(self.timeout_s):
                async for result, error in call:
                    if error is not None:
                        raise error_from_stream(error.message())
                    return result
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(str(exc.code()), exc.details() or str(exc.code())) from None
        except TimeoutError:
            raise EngineUnavailable(f"the llm model did not answer within {self.timeout_s:g} s",
                                    transient=False) from None
        finally:
            answered.set()
            call.cancel()
        raise EngineUnavailable("the llm model closed the stream without an answer")

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
