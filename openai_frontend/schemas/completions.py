"""POST /v1/completions (OpenAI's legacy completions) and vLLM's /tokenize and /detokenize: the shapes we accept.

A completion's ``prompt`` is a string or a list of strings, each a raw prompt the llm model takes as
its ``text_input`` (no chat template, the model's tokenizer adds its special tokens). ``max_tokens``
defaults to 16, as in OpenAI's API and vLLM's. ``logprobs`` (the top tokens per position) and
``logit_bias`` become the llm's sampling keys of those names: vLLM computes and applies them. Refused by
name: token-id prompts (the llm model takes a prompt as text), ``suffix`` (no fill-in-the-middle
rendering), and ``echo`` with ``logprobs`` (the llm model gives no logprobs of the prompt).

/tokenize takes vLLM's two shapes: ``{"prompt": ...}`` or ``{"messages": [...]}`` (chat messages of
text; ``add_generation_prompt``, ``continue_final_message``, ``chat_template_kwargs``), counted by the
llm model as generation counts them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.sampling import Sampling, checked_logit_bias
from openai_frontend.schemas.chat import StreamOptions
from openai_frontend.schemas.common import SamplingFields, Strict, refuse_if
from video_pipeline import contract as C

#: The most prompts one completion request may carry (each is one llm request).
MAX_PROMPTS = 256
#: Defaults as OpenAI's API and vLLM's server have them for /v1/completions.
DEFAULT_MAX_TOKENS = 16


class CompletionRequest(SamplingFields):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None  # the top tokens per position, 0 for the sampled token's alone (vLLM: up to 20)
    logit_bias: dict[str, float] | None = None

    def check_supported(self) -> None:
        refuse_if(self.suffix is not None, "suffix", "is not supported: the served model has no fill-in-the-middle "
                  "rendering")
        if self.logprobs is not None and self.logprobs < 0 and self.logprobs != -1:  # -1: vLLM's whole vocabulary
            raise bad_request(f"logprobs: must be between 0 and 20, got {self.logprobs}", "logprobs")
        refuse_if(self.logprobs is not None and bool(self.echo), "echo",
                  "cannot be combined with logprobs here: the llm model gives no logprobs of the prompt")
        refuse_if(self.best_of is not None and self.best_of != (self.n or 1), "best_of",
                  "is supported only equal to n")
        refuse_if(self.stream_options is not None and not self.stream, "stream_options",
                  "is only allowed when stream is true")
        refuse_if(bool(self.dry_run), "dry_run", "is for requests with media (chat and responses)")
        refuse_if(self.media_io_kwargs is not None, "media_io_kwargs", "is for requests with media")
        refuse_if(self.mm_processor_kwargs is not None, "mm_processor_kwargs", "is for requests with media")

    def prompts(self) -> list[str]:
        """The prompts, one llm request each."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise bad_request("prompt: must not be empty", "prompt")
        if not all(isinstance(p, str) for p in prompt):
            raise OpenAIError(400, "prompt: token-id prompts are not supported here; send the text (POST /detokenize "
                              "turns token ids into it)", param="prompt", code="unsupported_parameter")
        if len(prompt) > MAX_PROMPTS:
            raise bad_request(f"prompt: {len(prompt)} prompts; at most {MAX_PROMPTS} per request", "prompt")
        return list(prompt)  # type: ignore[arg-type]

    def generation_sampling(self) -> Sampling:
        sampling = Sampling(self.sampling(self.max_tokens, self.n), {C.TEXT_INPUT: "prompt"})
        sampling.put("logprobs", self.logprobs, "logprobs")
        sampling.put("logit_bias", checked_logit_bias(self.logit_bias), "logit_bias")
        return sampling


class TokenizeRequest(Strict):
    """vLLM's TokenizeCompletionRequest and TokenizeChatRequest in one: exactly one of prompt or messages."""

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    add_special_tokens: bool | None = None  # vLLM's defaults: true for a prompt, false for messages
    return_token_strs: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def check(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise OpenAIError(400, "give exactly one of prompt or messages", param="prompt" if self.prompt is None
                              else "messages", code="missing_required_parameter" if self.prompt is None
                              else "invalid_value")
        if self.prompt is not None:
            for name in ("add_generation_prompt", "continue_final_message", "chat_template_kwargs"):
                refuse_if(getattr(self, name) is not None, name, "is for messages, not a prompt")

    def options(self) -> dict[str, Any]:
        return {k: v for k in ("add_special_tokens", "return_token_strs") if (v := getattr(self, k)) is not None}


class DetokenizeRequest(Strict):
    model: str | None = None
    tokens: list[int] = Field(max_length=1 << 20)

    def check(self) -> None:
        for i, t in enumerate(self.tokens):
            if t < 0:
                raise bad_request(f"tokens[{i}]: must be a token id (0 or more), got {t}", f"tokens[{i}]")
