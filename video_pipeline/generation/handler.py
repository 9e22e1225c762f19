"""The ``video_generator`` model's per-request logic: tensors -> a queued generation -> streamed progress.

No Triton imports: the adapter (:class:`video_pipeline.triton_adapter.DecoupledModel`)
hands each request's inputs and a *sink* (send / finish / fail / is_cancelled). Requests
are checked at once (a bad one fails before it waits), then run one at a time on this
handler's worker thread, because a diffusers pipeline keeps per-call state. Each
denoising step sends a progress response; the last response carries the mp4.

Three kinds of request, by their inputs:

* ``prompt`` (+ ``generation_parameters`` JSON, + ``image``): generate;
* ``describe`` alone: one response whose ``generation_info`` is the model's capabilities;
* ``abort_request_id`` alone: stop the queued or running request with that id (the
  explicit abort, as the ``llm`` model has: tritonserver 2.51 drops some stream cancels).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput
from video_pipeline.generation.config import load_config
from video_pipeline.generation.encode import encode_mp4, load_image
from video_pipeline.generation.params import Capabilities, GenerationParams, format_seconds, parse_request
from video_pipeline.generation.pipeline import GenerationCancelled
from video_pipeline.steps import Inputs, as_bytes_list, parse_json_list

logger = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, outputs: dict[str, np.ndarray]) -> None: ...
    def finish(self, outputs: dict[str, np.ndarray] | None = None) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def is_cancelled(self) -> bool: ...


class Generator(Protocol):
    """What the handler needs of a pipeline (:class:`~video_pipeline.generation.pipeline.DiffusersGenerator`)."""

    capabilities: Capabilities

    def generate(self, params: GenerationParams, image: Any | None, on_step: Any, should_stop: Any) -> np.ndarray: ...


def outputs(info: dict[str, Any], step: int = 0, num_steps: int = 0, video: bytes = b"") -> dict[str, np.ndarray]:
    """One response's tensors."""
    return {
        C.VIDEO: np.array([video], dtype=np.object_),
        C.STEP: np.array([step], dtype=np.uint32),
        C.NUM_STEPS: np.array([num_steps], dtype=np.uint32),
        C.GENERATION_INFO: np.array([json.dumps(info, separators=(",", ":")).encode()], dtype=np.object_),
    }


@dataclass
class _Job:
    request_id: str
    params: GenerationParams
    image: Any | None
    sink: Sink
    queued_at: float


class GeneratorHandler:
    """Owns the pipeline and the worker thread that runs it; answers each request through its sink."""

    def __init__(self, generator: Generator, encoder: dict[str, str] | None = None) -> None:
        self.generator = generator
        self.encoder = encoder or {}  # x264 options over encode.X264_OPTIONS
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: dict[str, _Job] = {}  # queued or running, by request id
        self._aborted: set[str] = set()
        self._worker = threading.Thread(target=self._loop, name="video-generator", daemon=True)
        self._worker.start()

    @classmethod
    def from_model_dir(cls, folder: Path) -> GeneratorHandler:
        from video_pipeline.generation.pipeline import DiffusersGenerator

        config = load_config(folder)
        started = time.perf_counter()
        generator = DiffusersGenerator(config)
        logger.info("video_generator: %s ready in %.1f s: %s", config.served_model_name,
                    time.perf_counter() - started, generator.capabilities.to_json())
        return cls(generator, config.encoder)

    @property
    def capabilities(self) -> Capabilities:
        return self.generator.capabilities

    # --- requests ----------------------------------------------------------------------------------

    def submit(self, inputs: Inputs, request_id: str, sink: Sink) -> None:
        describe = inputs.get(C.DESCRIBE)
        if describe is not None and describe.size and bool(describe.reshape(-1)[0]):
            sink.finish(outputs(self.capabilities.to_json()))
            return
        abort_ids = as_bytes_list(inputs.get(C.ABORT_REQUEST_ID), C.ABORT_REQUEST_ID)
        if abort_ids:
            self._abort(abort_ids[0].decode("utf-8", "replace"), sink)
            return
        prompts = as_bytes_list(inputs.get(C.PROMPT), C.PROMPT)
        if len(prompts) != 1:
            raise InvalidInput(f"give one '{C.PROMPT}' (or '{C.DESCRIBE}', or '{C.ABORT_REQUEST_ID}')")
        try:
            prompt = prompts[0].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{C.PROMPT} is not valid UTF-8") from None
        docs = parse_json_list(inputs.get(C.GENERATION_PARAMETERS), C.GENERATION_PARAMETERS)
        raw = docs[0] if docs else {}
        if not isinstance(raw, dict):
            raise InvalidInput(f"{C.GENERATION_PARAMETERS} must be a JSON object")
        images = as_bytes_list(inputs.get(C.IMAGE), C.IMAGE)
        params = parse_request(prompt, raw, self.capabilities, has_image=bool(images))
        image = load_image(images[0], C.IMAGE) if images else None
        job = _Job(request_id or f"gen-{uuid.uuid4().hex}", params, image, sink, time.monotonic())
        with self._lock:
            if job.request_id in self._pending:
                raise InvalidInput(f"request id {job.request_id} is already queued or running")
            self._pending[job.request_id] = job
        self._queue.put(job)

    def _abort(self, target: str, sink: Sink) -> None:
        if not target:
            raise InvalidInput(f"{C.ABORT_REQUEST_ID} is empty")
        with self._lock:
            found = target in self._pending
            if found:
                self._aborted.add(target)
        logger.info("abort request for video request %s: %s", target, "stopping it" if found else "not running")
        sink.finish(outputs({"aborted": found, "request_id": target}))

    # --- the worker ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._pending.pop(job.request_id, None)
                    self._aborted.discard(job.request_id)

    def _stopped(self, job: _Job) -> bool:
        with self._lock:
            aborted = job.request_id in self._aborted
        return aborted or job.sink.is_cancelled()

    def _run(self, job: _Job) -> None:
        p = job.params
        progress = {"done": 0}
        if self._stopped(job):
            logger.info("video request %s cancelled while queued", job.request_id)
            job.sink.fail(GenerationCancelled("cancelled while queued"))
            return
        started = time.monotonic()
        job.sink.send(outputs({"stage": "started"}, 0, p.num_inference_steps))

        def on_step(done: int, total: int) -> None:
            progress["done"] = done
            stage = "decoding" if done >= total else "denoising"
            job.sink.send(outputs({"stage": stage}, done, total))

        try:
            frames = self.generator.generate(p, job.image, on_step, lambda: self._stopped(job))
            job.sink.send(outputs({"stage": "encoding"}, progress["done"], p.num_inference_steps))
            video = encode_mp4(frames, p.fps, self.encoder)
        except GenerationCancelled as exc:
            logger.info("video request %s cancelled at step %d of %d", job.request_id, progress["done"],
                        p.num_inference_steps)
            job.sink.fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - this request's error only; the sink logs unexpected ones
            job.sink.fail(exc)
            return
        elapsed = time.monotonic() - started
        info = {
            "width": p.width, "height": p.height, "num_frames": p.num_frames, "fps": p.fps,
            "seconds": format_seconds(p.seconds), "seed": p.seed, "num_inference_steps": p.num_inference_steps,
            "image_to_video": job.image is not None, "bytes": len(video),
            "queue_s": round(started - job.queued_at, 3), "inference_s": round(elapsed, 3),
        }
        logger.info("video request %s: %dx%d, %d frames, %d steps in %.2f s", job.request_id, p.width, p.height,
                    p.num_frames, p.num_inference_steps, elapsed)
        job.sink.finish(outputs(info, p.num_inference_steps, p.num_inference_steps, video))

    def healthy(self) -> bool:
        return self._worker.is_alive()

    def shutdown(self) -> None:
        with self._lock:
            self._aborted.update(self._pending)  # the running request stops at its next step
        self._queue.put(None)
        self._worker.join(timeout=30)
