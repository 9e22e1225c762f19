"""The only module that touches Triton's python-backend utilities.

A Triton ``model.py`` subclasses :class:`StepModel` and names a *step*: a plain
callable taking ``{tensor name: numpy array or None}`` and returning
``{tensor name: numpy array}``. The adapter reads and validates inputs against
:mod:`video_pipeline.contract`, runs the step per request and turns typed errors
into per-request Triton errors, so one bad request never fails its batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # injected by the stub

from video_pipeline import log_format
from video_pipeline.contract import MODELS, ModelContract
from video_pipeline.errors import EngineUnavailable, PipelineError

logger = logging.getLogger(__name__)

Inputs = dict[str, "np.ndarray | None"]
Outputs = dict[str, np.ndarray]


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    """``parameters`` of config.pbtxt as plain strings; a relative ``served_model`` path is made
    absolute from this model's folder."""
    from video_pipeline.steps import resolve_parameters

    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    return resolve_parameters(params, args.get("model_repository"))


def triton_error(exc: BaseException) -> Any:
    """A TritonError with the code our typed error maps to, its message carrying the error as data
    (contract.ErrorDoc: class, code, HTTP status, the item and parameter at fault), since neither a
    stream's in-band errors nor BLS responses keep the code; unexpected errors stay generic."""
    if not isinstance(exc, PipelineError):
        exc = PipelineError(f"internal error ({type(exc).__name__})")
    code = getattr(pb_utils.TritonError, exc.triton_code, pb_utils.TritonError.INTERNAL)
    return pb_utils.TritonError(exc.to_doc().encode(), code)


def request_id_of(request: Any) -> str:
    """The client's request id (the shim sends its X-Request-Id; ensembles pass it to their steps)."""
    try:
        return request.request_id() or ""
    except Exception:  # noqa: BLE001 - ids are for logs only
        return ""


def read_inputs(request: Any, contract: ModelContract) -> Inputs:
    inputs: Inputs = {}
    for spec in contract.inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        inputs[spec.name] = None if tensor is None else tensor.as_numpy()
    return inputs


def make_response(outputs: Outputs, contract: ModelContract) -> Any:
    """A response with the contract's outputs that ``outputs`` holds (a decoupled model's response
    may carry a subset, e.g. llm's video_info response)."""
    tensors = []
    for spec in contract.outputs:
        arr = outputs.get(spec.name)
        if arr is None:
            continue
        if spec.dtype == "TYPE_STRING":
            arr = np.asarray(arr, dtype=np.object_)
        tensors.append(pb_utils.Tensor(spec.name, arr))
    return pb_utils.InferenceResponse(output_tensors=tensors)


class StepModel:
    """Base for non-decoupled models: one step call per request."""

    #: name of the model in video_pipeline.contract.MODELS
    contract_name: str = ""

    def make_step(self, params: dict[str, str]) -> Callable[[Inputs], Outputs]:
        raise NotImplementedError

    def initialize(self, args: dict[str, Any]) -> None:
        log_format.configure("INFO")  # VLT_LOG_FORMAT (text|json), like the shim
        self.contract = MODELS[self.contract_name]
        try:
            self.step = self.make_step(model_parameters(args))
        except PipelineError as exc:
            # A bad configuration fails the model load, loudly.
            raise pb_utils.TritonModelException(f"{self.contract_name}: {exc}") from None

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            request_id = request_id_of(request)
            started = time.perf_counter()
            try:
                outputs = self.step(read_inputs(request, self.contract))
                responses.append(make_response(outputs, self.contract))
                _log_done(self.contract_name, request_id, started)
            except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
                if not isinstance(exc, PipelineError):
                    logger.exception("%s: unexpected error", self.contract_name, extra={"request_id": request_id})
                _log_done(self.contract_name, request_id, started, exc)
                responses.append(pb_utils.InferenceResponse(error=triton_error(exc)))
        return responses

    def finalize(self) -> None:
        close = getattr(self.step, "close", None)  # steps holding resources (the decoder's cache)
        if close is not None:
            close()


def _typed_error(message: str) -> PipelineError:
    """A BLS response's error as our typed error, read from the document the media models wrote into its
    message (BLS loses the code); anything else came from Triton itself (model not ready, ...)."""
    from video_pipeline import contract as C
    from video_pipeline.errors import from_doc

    doc = C.parse_error(message)
    if doc is None:
        return EngineUnavailable(f"video_media failed: {message}")
    return from_doc(doc)


class BlsMedia:
    """``video_media`` (decoder -> preprocessor) called from inside a model through BLS.

    ``media(video, video_options, request_id) -> (packed video_frames, [video_info, ...])`` takes the
    tensors as the caller got them; the media model's error comes back as the typed error its message's
    document describes (contract.ErrorDoc: class, item, message). Blocking: call it from a worker thread (BLS ``exec`` works from any thread
    of the stub; ``async_exec`` is the same call run in an executor).
    """

    def __init__(self, model_name: str = "") -> None:
        from video_pipeline.contract import VIDEO_MEDIA

        self.contract = VIDEO_MEDIA
        self.model_name = model_name or VIDEO_MEDIA.name

    def __call__(self, video: np.ndarray | None, video_options: np.ndarray | None,
                 request_id: str = "") -> tuple[np.ndarray, list[dict[str, Any]]]:
        from video_pipeline import contract as C

        inputs = [pb_utils.Tensor(name, np.asarray(arr, dtype=np.object_))
                  for name, arr in ((C.VIDEO, video), (C.VIDEO_OPTIONS, video_options)) if arr is not None]
        request = pb_utils.InferenceRequest(model_name=self.model_name, inputs=inputs, request_id=request_id,
                                            requested_output_names=[C.VIDEO_FRAMES, C.VIDEO_INFO])
        response = request.exec()
        if response.has_error():
            error = response.error()
            raise _typed_error(error.message())
        frames = pb_utils.get_output_tensor_by_name(response, C.VIDEO_FRAMES).as_numpy()
        infos = [json.loads(x) for x in pb_utils.get_output_tensor_by_name(response, C.VIDEO_INFO).as_numpy().reshape(-1)]
        return frames, infos


class CacheMetrics:
    """Custom metrics of a step's media cache on Triton's metrics endpoint (port 8002).

    Every instance of a model uses the same families and labels, so the counters add up over
    instances; the byte and entry gauges describe the folder the instances share.
    """

    def __init__(self, model: str) -> None:
        labels = {"model": model}
        self._families: list[Any] = []  # a family must outlive its metrics, or setting them fails

        def metric(name: str, description: str, kind: Any) -> Any:
            family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            self._families.append(family)
            return family.Metric(labels=labels)

        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        self._hits = metric("vlt_media_cache_hits_total", "Videos served from the media cache", counter)
        self._misses = metric("vlt_media_cache_misses_total", "Videos decoded and stored in the media cache", counter)
        self._evictions = metric("vlt_media_cache_evictions_total",
                                 "Media cache entries removed to make room (least recently used)", counter)
        self._bytes = metric("vlt_media_cache_bytes", "Bytes held by the media cache", gauge)
        self._entries = metric("vlt_media_cache_entries", "Entries held by the media cache", gauge)

    def hit(self) -> None:
        self._hits.increment(1)

    def miss(self) -> None:
        self._misses.increment(1)

    def evicted(self, entries: int) -> None:
        self._evictions.increment(entries)

    def size(self, nbytes: int, entries: int) -> None:
        self._bytes.set(nbytes)
        self._entries.set(entries)


def _log_done(model: str, request_id: str, started: float, error: BaseException | None = None) -> None:
    """One line per request and model: the id that ties it to the shim's log, the time, the outcome."""
    ms = round((time.perf_counter() - started) * 1000, 1)
    extra = {"request_id": request_id, "model": model, "duration_ms": ms}
    if error is None:
        logger.info("%s: request %s done in %.1f ms", model, request_id or "-", ms, extra=extra)
    else:
        logger.info("%s: request %s failed in %.1f ms: %s", model, request_id or "-", ms, error,
                    extra={**extra, "error": type(error).__name__})


class ResponseSink:
    """One decoupled request's way back to its client, usable from any thread.

    Sends go through the model's response thread so the engine's event loop never
    blocks on Triton; the last message carries the FINAL flag, errors included.
    """

    def __init__(self, model: DecoupledModel, request: Any) -> None:
        self._model = model
        self._request = request
        self._sender = request.get_response_sender()
        self._closed = False
        self.request_id = request_id_of(request)
        self._started = time.perf_counter()

    def send(self, outputs: Outputs) -> None:
        if not self._closed:
            self._model._outbox.put((self._sender, make_response(outputs, self._model.contract), 0))

    def finish(self, outputs: Outputs | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        _log_done(self._model.contract_name, self.request_id, self._started)
        response = None if outputs is None else make_response(outputs, self._model.contract)
        self._model._outbox.put((self._sender, response, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL))

    def fail(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        if not isinstance(exc, PipelineError):
            logger.error("%s: unexpected error", self._model.contract_name, exc_info=exc,
                         extra={"request_id": self.request_id})
        _log_done(self._model.contract_name, self.request_id, self._started, exc)
        if isinstance(exc, EngineUnavailable):
            self._model.recheck_health()  # readiness must drop now, not on some later request
        response = pb_utils.InferenceResponse(error=triton_error(exc))
        self._model._outbox.put((self._sender, response, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL))

    def is_cancelled(self) -> bool:
        # Both flags: in 2.51 a client's stream cancel does not always show on the request
        # (a few in fifteen were missed), and vllm_backend polls the sender's.
        for source in (self._request, self._sender):
            try:
                if source.is_cancelled():
                    return True
            except Exception:  # noqa: BLE001 - older stubs lack one of them
                continue
        return False


class DecoupledModel:
    """Base for decoupled (streaming) models whose work runs on a handler's own threads.

    Subclasses build a handler in :meth:`make_handler`; the handler's
    ``submit(inputs, request_id, sink)`` must return quickly and answer through the
    sink; ``healthy()`` says whether it can still serve; ``shutdown()`` drains or aborts.
    """

    contract_name: str = ""

    def make_handler(self, args: dict[str, Any], params: dict[str, str]) -> Any:
        raise NotImplementedError

    def initialize(self, args: dict[str, Any]) -> None:
        import queue

        log_format.configure("INFO")
        self.contract = MODELS[self.contract_name]
        self.model_name = json.loads(args["model_config"])["name"]
        try:
            self.handler = self.make_handler(args, model_parameters(args))
        except PipelineError as exc:
            raise pb_utils.TritonModelException(f"{self.contract_name}: {exc}") from None
        self._outbox: queue.Queue = queue.Queue()
        self._healthy = True
        self._health_lock = threading.Lock()
        self._sender_thread = threading.Thread(target=self._send_loop, name="responses", daemon=True)
        self._sender_thread.start()

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            sender, response, flags = item
            try:
                if response is None:
                    sender.send(flags=flags)
                else:
                    sender.send(response, flags=flags)
            except Exception:  # noqa: BLE001 - a client that went away must not stop the others
                logger.warning("%s: could not send a response", self.contract_name, exc_info=True)

    def _check_health(self) -> None:
        with self._health_lock:
            if self._healthy and not self.handler.healthy():
                # Unloading makes readiness fail, so orchestrators route away and restart us.
                logger.error("%s: engine is unhealthy; unloading the model", self.model_name)
                self._healthy = False
                pb_utils.unload_model(self.model_name)

    def recheck_health(self) -> None:
        """A request failed because the engine is unavailable: check it now, off the caller's thread."""
        if self._healthy:
            threading.Thread(target=self._check_health, name="health", daemon=True).start()

    def execute(self, requests: list[Any]) -> None:
        self._check_health()
        for request in requests:
            sink = ResponseSink(self, request)
            if not self._healthy:
                sink.fail(EngineUnavailable("the inference engine is not healthy"))
                continue
            try:
                self.handler.submit(read_inputs(request, self.contract), sink.request_id, sink)
            except Exception as exc:  # noqa: BLE001 - this request's error only
                sink.fail(exc)
        return None

    def finalize(self) -> None:
        try:
            self.handler.shutdown()
        finally:
            self._outbox.put(None)
            self._sender_thread.join(timeout=10)
