"""The production engine: vLLM's ``AsyncLLM`` behind the :class:`~video_pipeline.engines.types.AsyncEngine` protocol.

Engine arguments pass through to ``AsyncEngineArgs`` untouched, so every vLLM
option works and a bad one fails construction with vLLM's own message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from video_pipeline.engines.prompt import (
    MediaTokenIds,
    mm_processor_kwargs,
    multi_modal_data,
    multi_modal_uuids,
    render_prompt,
    resolve_chat_template,
)
from video_pipeline.engines.sampling import parse_sampling, to_sampling_params, vllm_client_error
from video_pipeline.engines.types import GenerationDelta, GenerationRequest
from video_pipeline.errors import EngineUnavailable, InvalidInput, PipelineError
from video_pipeline.media.embeds import EmbedsSpec

logger = logging.getLogger(__name__)


class VllmEngine:
    """Owns one ``AsyncLLM``; turns :class:`GenerationRequest` into :class:`GenerationDelta` streams.

    ``engine_args`` go to ``AsyncEngineArgs(**engine_args)`` unchanged; vLLM's
    errors propagate from the constructor as they are. Construct it in the
    event loop that will drive it (``AsyncLLM`` binds its output task to the
    running loop). ``chat_template`` overrides the model's own template.
    """

    def __init__(self, engine_args: Mapping[str, Any], *, chat_template: str | None = None) -> None:
        from video_pipeline.engines.versions import check_vllm_version

        check_vllm_version()  # before vLLM's own import errors, which would not name the range
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # The engine lives only in this attribute, never in a local: frames kept
        # alive by tracebacks stored during imports would otherwise keep it past
        # shutdown(), and AsyncLLM.__del__ then fails at interpreter exit.
        self._engine: Any = AsyncLLM.from_engine_args(AsyncEngineArgs(**dict(engine_args)))
        try:
            self._configure(chat_template)
        except BaseException:
            self.shutdown()
            raise

    def _configure(self, chat_template: str | None) -> None:
        model_config = self._engine.model_config
        tokenizer = self._engine.tokenizer
        if tokenizer is None:
            raise ValueError("the engine has no tokenizer (skip_tokenizer_init?); chat prompts need one")
        self._tokenizer = tokenizer
        self._chat_template = chat_template or resolve_chat_template(
            model_config.model,
            tokenizer,
            revision=getattr(model_config, "tokenizer_revision", None),
            trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)),
        )
        self._media_ids = MediaTokenIds.from_model(model_config.hf_config, tokenizer)
        self._default_sampling = dict(model_config.get_diff_sampling_param())
        self.max_model_len: int = model_config.max_model_len
        # Image embedding inputs: only with vLLM's enable_mm_embeds, checked against this model's shapes.
        mm_config = getattr(model_config, "multimodal_config", None)
        self.embeds_spec: EmbedsSpec | None = None
        if mm_config is not None and getattr(mm_config, "enable_mm_embeds", False):
            self.embeds_spec = EmbedsSpec.from_hf_config(model_config.hf_config, model_config.get_inputs_embeds_size(),
                                                         model_config.dtype)
        self.takes_embeds = mm_config is not None and bool(getattr(mm_config, "enable_mm_embeds", False))
        if self._default_sampling:
            logger.info("model generation-config sampling defaults: %s", self._default_sampling)

    @property
    def tokenizer(self) -> Any:
        """The engine's Hugging Face tokenizer."""
        return self._tokenizer

    @property
    def media_token_ids(self) -> MediaTokenIds:
        """The placeholder token ids counted as video / image tokens."""
        return self._media_ids

    def build_prompt(self, request: GenerationRequest) -> dict[str, Any]:
        """The vLLM prompt dict for ``request`` (text plus ``multi_modal_data``)."""
        text = render_prompt(request, self._tokenizer, self._chat_template)
        if request.prompt is not None:
            check_raw_placeholders(text, request, self._tokenizer, self._media_ids)
        prompt: dict[str, Any] = {"prompt": text}
        mm_data = multi_modal_data(request)
        if mm_data:
            prompt["multi_modal_data"] = mm_data
            uuids = multi_modal_uuids(request)
            if uuids:
                prompt["multi_modal_uuids"] = uuids
            kwargs = mm_processor_kwargs(request)
            if kwargs:
                prompt["mm_processor_kwargs"] = kwargs
        return prompt

    def sampling_params(self, request: GenerationRequest) -> Any:
        """vLLM ``SamplingParams`` for ``request`` over the model's defaults."""
        return to_sampling_params(
            parse_sampling(request.sampling), defaults=self._default_sampling, stream=request.stream
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        """Stream the request's deltas, one or more per engine step, for each choice.

        Closing the iterator early aborts the request in vLLM. Raises
        :class:`InvalidInput` for requests vLLM refuses, :class:`EngineUnavailable`
        when the engine is dead, :class:`PipelineError` for anything else.
        """
        if self._engine is None:
            raise EngineUnavailable("engine is shut down")
        prompt = self.build_prompt(request)
        params = self.sampling_params(request)
        # Chat templates already hold the model's special tokens (BOS where it has one).
        tokenization = {"add_special_tokens": False} if request.messages is not None else None
        media: tuple[int, int] | None = None
        prompt_tokens = 0
        completion: dict[int, int] = {}
        stream = self._engine.generate(prompt, params, request.request_id, tokenization_kwargs=tokenization)
        try:
            async with aclosing(stream):
                async for output in stream:
                    if media is None and output.prompt_token_ids is not None:
                        prompt_tokens = len(output.prompt_token_ids)
                        media = self._media_ids.count(output.prompt_token_ids)
                    video_tokens, image_tokens = media or (0, 0)
                    for choice in output.outputs:
                        completion[choice.index] = completion.get(choice.index, 0) + len(choice.token_ids)
                        yield GenerationDelta(
                            index=choice.index,
                            text=choice.text,
                            token_ids=tuple(choice.token_ids),
                            finish_reason=choice.finish_reason,
                            stop_reason=choice.stop_reason,
                            prompt_tokens=prompt_tokens,
                            completion_tokens=completion[choice.index],
                            video_tokens=video_tokens,
                            image_tokens=image_tokens,
                        )
        except PipelineError:
            raise
        except Exception as exc:
            raise map_engine_error(exc) from exc

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` (all its choices); its stream ends with finish_reason "abort"."""
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def check_health(self) -> None:
        """Raise :class:`EngineUnavailable` if the engine core died or was shut down."""
        if self._engine is None:
            raise EngineUnavailable("engine is shut down")
        try:
            await self._engine.check_health()
        except Exception as exc:
            raise EngineUnavailable(f"engine is not healthy: {exc}") from exc

    def is_dead(self) -> bool:
        """Cheap, synchronous: True once the engine core has died (or was shut down).

        vLLM starts its output handler lazily, so a request added after the core died
        but before any output was awaited can wait forever; the background loop polls
        this to fail such requests instead (see BackgroundEngine).
        """
        engine = self._engine
        if engine is None:
            return True
        try:
            return bool(engine.errored) or bool(engine.engine_core.resources.engine_dead)
        except Exception:  # noqa: BLE001 - a half-torn-down engine counts as dead
            return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the engine core and its worker processes."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown(timeout=timeout)


def check_raw_placeholders(
    text: str, request: GenerationRequest, tokenizer: Any, media_ids: MediaTokenIds
) -> None:
    """Refuse a raw prompt with fewer media placeholders than media, before vLLM asserts on it.

    Counts the model's placeholder token (Qwen: one ``<|video_pad|>`` per video
    before expansion); a prompt with more is left to vLLM to judge.
    """
    if not request.videos and not request.images:
        return
    ids = tokenizer.encode(text, add_special_tokens=False)
    videos, images = media_ids.count(ids)
    if media_ids.video is not None and videos < len(request.videos):
        raise InvalidInput(
            f"prompt has {videos} video placeholder(s) for {len(request.videos)} video(s); "
            "send messages, or put the model's video placeholder in the prompt"
        )
    if media_ids.image is not None and images < len(request.images):
        raise InvalidInput(f"prompt has {images} image placeholder(s) for {len(request.images)} image(s)")


def map_engine_error(exc: BaseException) -> PipelineError:
    """The typed error for an exception out of ``AsyncLLM.generate``.

    vLLM raises its client errors (``VLLMClientError``, a ``ValueError`` from
    input processing) for bad requests, ``EngineDeadError`` when the core died,
    and wraps anything unexpected in ``EngineGenerateError`` (cause chained).
    """
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    if isinstance(exc, EngineDeadError):
        return EngineUnavailable(str(exc))
    if isinstance(exc, EngineGenerateError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, (vllm_client_error(), ValueError, TypeError)):
        return InvalidInput(str(exc))
    return PipelineError(f"generation failed: {type(exc).__name__}: {exc}")
