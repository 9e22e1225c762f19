"""The production engine: vLLM's ``AsyncLLM`` behind the :class:`~video_pipeline.engines.types.AsyncEngine` protocol.

Engine arguments pass through to ``AsyncEngineArgs`` untouched, so every vLLM
option works and a bad one fails construction with vLLM's own message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from video_pipeline import contract as C
from video_pipeline.engines.prompt import (
    MediaTokenIds,
    mm_processor_kwargs,
    multi_modal_data,
    multi_modal_uuids,
    render_prompt,
    resolve_chat_template,
)
from video_pipeline.engines.sampling import (
    NAMED_KEYS,
    STRUCTURED_OUTPUTS,
    error_text,
    parse_sampling,
    refused,
    to_sampling_params,
    vllm_client_error,
)
from video_pipeline.engines.types import GenerationDelta, GenerationRequest, TokenLogprob
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
        """vLLM ``SamplingParams`` for ``request`` over the model's defaults, checked by vLLM."""
        params = to_sampling_params(
            parse_sampling(request.sampling), defaults=self._default_sampling, stream=request.stream
        )
        self.check_sampling(params)
        return params

    def check_sampling(self, params: Any) -> None:
        """vLLM's own checks of ``params`` (the ones ``AsyncLLM`` runs when the request is added, which
        compile a structured-output constraint), run here first so that a refusal names its parameter:
        ``InvalidInput("structured_outputs: Failed to transform json schema into a grammar: ...")``.
        Running them twice is harmless: vLLM's are idempotent (the backend choice is remembered)."""
        processor = getattr(self._engine, "input_processor", None)
        if processor is None:
            return
        try:
            params.verify(processor.model_config, processor.speculative_config,
                          processor.structured_outputs_config, processor.tokenizer)
        except (ValueError, TypeError, vllm_client_error()) as exc:
            key = getattr(exc, "parameter", None)
            if key is None and params.structured_outputs is not None:
                key = STRUCTURED_OUTPUTS  # vLLM names no parameter for the constraint it could not compile
            if key in NAMED_KEYS:
                raise InvalidInput(f"{key}: {error_text(exc)}", param=key, code="invalid_value") from exc
            raise refused(exc) from exc

    def token_logprobs(self, token_ids: Any, logprobs: Any, top: int) -> tuple[TokenLogprob, ...]:
        """Our :class:`TokenLogprob` per new token from vLLM's ``CompletionOutput.logprobs``."""
        return token_logprobs(token_ids, logprobs, top, self._tokenizer)

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
        try:
            engine_input = await self.render(prompt, tokenization, request)
        except PipelineError:
            raise
        except Exception as exc:
            raise map_engine_error(exc) from exc
        media: tuple[int, int] | None = None
        prompt_tokens = 0
        completion: dict[int, int] = {}
        stream = self._engine.generate(engine_input, params, request.request_id, tokenization_kwargs=tokenization)
        try:
            async with aclosing(stream):
                async for output in stream:
                    if media is None and output.prompt_token_ids is not None:
                        prompt_tokens = len(output.prompt_token_ids)
                        media = self._media_ids.count(output.prompt_token_ids)
                    video_tokens, image_tokens = media or (0, 0)
                    for choice in output.outputs:
                        if choice.finish_reason == "error":
                            raise generation_failed(params)
                        completion[choice.index] = completion.get(choice.index, 0) + len(choice.token_ids)
                        logprobs = None
                        if params.logprobs is not None:
                            logprobs = self.token_logprobs(choice.token_ids, choice.logprobs, params.logprobs)
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
                            logprobs=logprobs,
                        )
        except PipelineError:
            raise
        except Exception as exc:
            raise map_engine_error(exc) from exc

    async def render(self, prompt: dict[str, Any], tokenization: dict[str, Any] | None,
                     request: GenerationRequest) -> Any:
        """``prompt`` tokenized and multimodal-processed by the engine's own renderer, as vLLM's server does
        before it adds a request, so that its length is known first (:func:`check_context`) and a prompt,
        or a prompt with the ``max_tokens`` asked, longer than the context is refused before generating."""
        renderer = getattr(self._engine, "renderer", None)
        if renderer is None:
            return prompt
        from vllm.renderers.inputs.preprocess import extract_prompt_len, parse_model_prompt

        model_config = self._engine.model_config
        tok_params = renderer.default_cmpl_tok_params.with_kwargs(**(tokenization or {}))
        where = C.MESSAGES if request.messages is not None else C.TEXT_INPUT
        try:
            (engine_input,) = await renderer.render_cmpl_async([parse_model_prompt(model_config, prompt)], tok_params)
        except vllm_client_error() as exc:
            # vLLM names the prompt's length as these parameters when it is longer than the context
            if getattr(exc, "parameter", None) in ("input_tokens", "input_text"):
                raise InvalidInput(error_text(exc), param=where, code="context_length_exceeded") from exc
            raise
        asked = parse_sampling(request.sampling).get("max_tokens")  # the client's; a model default stops at the context
        check_context(extract_prompt_len(model_config, engine_input), asked, self.max_model_len, where)
        return engine_input

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


#: vLLM's floor for a logprob it answers (-inf is no JSON number).
MIN_LOGPROB = -9999.0


def token_logprobs(token_ids: Any, logprobs: Any, top: int, tokenizer: Any) -> tuple[TokenLogprob, ...]:
    """Per new token: its id, text, logprob and the ``top`` most likely tokens at its position.

    vLLM's per-position dict holds the sampled token (at its rank) and the top-k by rank, so
    the top entries are the ranks 1..k (the sampled token among them only if it ranks there).
    Texts are vLLM's detokenized ones, else the tokenizer's decoding of the id alone.
    """
    out: list[TokenLogprob] = []
    for i, token_id in enumerate(token_ids):
        position = logprobs[i] if logprobs is not None and i < len(logprobs) else None
        position = dict(position or {})

        def text(tid: int, entry: Any) -> str:
            decoded = getattr(entry, "decoded_token", None)
            return decoded if isinstance(decoded, str) else tokenizer.decode([tid])

        def value(entry: Any) -> float:
            lp = float(entry.logprob)
            return lp if lp > MIN_LOGPROB else MIN_LOGPROB  # also NaN -> the floor

        sampled = position.get(token_id)
        ranked = sorted(((tid, e) for tid, e in position.items() if getattr(e, "rank", None) is not None),
                        key=lambda item: item[1].rank)
        best = tuple((tid, text(tid, e), value(e)) for tid, e in ranked[:max(top, 0)])
        out.append(TokenLogprob(
            token_id=int(token_id),
            token=text(token_id, sampled),
            logprob=value(sampled) if sampled is not None else MIN_LOGPROB,
            top=best,
        ))
    return tuple(out)


def generation_failed(params: Any) -> PipelineError:
    """The error for a choice vLLM ended with finish_reason "error": with a structured-output
    constraint, the grammar the engine core could not compile (or that rejected every token)."""
    if getattr(params, "structured_outputs", None) is not None:
        return InvalidInput(f"{STRUCTURED_OUTPUTS}: the engine could not compile or follow this constraint "
                            "(see the server log)", param=STRUCTURED_OUTPUTS, code="invalid_value")
    return PipelineError("generation failed in the engine (finish_reason \"error\"); see the server log")


def check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int, where: str) -> None:
    """Refuses, as OpenAI does, a prompt that leaves no room in the context and a client's ``max_tokens`` that
    does not fit beside the prompt: InvalidInput context_length_exceeded naming what to shorten (``where``,
    the prompt's input; max_tokens). A default max_tokens is vLLM's to clamp."""
    what = "messages" if where == C.MESSAGES else "prompt"
    if prompt_tokens >= max_model_len:
        raise InvalidInput(f"This model's maximum context length is {max_model_len} tokens. However, your {what} "
                           f"resulted in {prompt_tokens} tokens, which leaves no room for output. Please reduce "
                           f"the length of the {what}.", param=where, code="context_length_exceeded")
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise InvalidInput(f"This model's maximum context length is {max_model_len} tokens. However, you "
                           f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {what}, "
                           f"{max_tokens} in the completion). Please reduce the length of the {what} or "
                           "completion.", param="max_tokens", code="context_length_exceeded")


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
        key = getattr(exc, "parameter", None)
        return InvalidInput(error_text(exc) if key else str(exc), param=key)
    return PipelineError(f"generation failed: {type(exc).__name__}: {exc}")
