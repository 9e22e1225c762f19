"""POST /v1/responses: the request shapes we accept, and their conversation.

``input`` is a string or a list of messages whose content parts are
``input_text``, ``input_image`` (``image_url`` or ``file_id``), ``input_video``
(``video_url`` or ``file_id``; ours, in the spirit of input_image) and
``input_file`` (``file_id`` or ``file_data``: read as the video, image or audio the file is);
assistant turns carry ``output_text``.
A ``file_id`` names a file uploaded through the Files API (bare, or as vLLM's
``vllm-file://<id>``, also taken as an ``input_file``'s ``file_url``). ``input_image`` and
``input_video`` take vLLM's ``uuid``, alone to name media sent before with it.
``input_audio`` takes OpenAI's ``input_audio`` object (``{"data": <base64>, "format"}``), or
(ours, like input_image) an ``audio_url`` or ``file_id``; ``mm_processor_kwargs.use_audio_in_video``
sends each video's own audio track with it.
Function ``tools`` and ``tool_choice`` (openai_frontend.tools); ``function_call`` and
``function_call_output`` input items replay a model's calls and their results.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.media.options import part_window
from openai_frontend.media.urls import VLLM_FILE_SCHEME, file_id_of
from openai_frontend.sampling import OUTPUT_TEXT_LOGPROBS, Sampling, logprobs_count, structured_from_format
from openai_frontend.schemas.chat import VideoURL, file_ref
from openai_frontend.schemas.common import (
    InputAudio,
    SamplingFields,
    Strict,
    audio_data_url,
    media_url,
    refuse_if,
    template_kwargs,
    validate,
    validate_part,
)
from openai_frontend.service import AudioRef, Conversation, FileRef, ImageRef, Part, Turn, VideoRef
from openai_frontend.tools import (
    function_call_item,
    function_call_output_item,
    responses_tool_choice,
    responses_tools,
    tools_request,
)
from video_pipeline import contract as C
from video_pipeline.engines.sampling import STRUCTURED_OUTPUTS

PART_TYPES = ("input_text", "input_image", "input_video", "input_audio", "input_file", "output_text")


class InputText(Strict):
    type: Literal["input_text"]
    text: str


class OutputText(Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputImage(Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None
    uuid: str | None = None


class InputVideo(Strict):
    type: Literal["input_video"]
    video_url: str | VideoURL | None = None
    file_id: str | None = None
    start: float | None = None
    end: float | None = None
    uuid: str | None = None


class InputAudioItem(Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio | None = None
    audio_url: str | None = None
    file_id: str | None = None


class InputFile(Strict):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


_PART_MODELS: dict[str, type[Strict]] = {
    "input_text": InputText,
    "output_text": OutputText,
    "input_image": InputImage,
    "input_video": InputVideo,
    "input_audio": InputAudioItem,
    "input_file": InputFile,
}


class InputMessage(Strict):
    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    id: str | None = None  # present when a client replays an earlier output item
    status: str | None = None


class TextConfig(Strict):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(SamplingFields):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    text: TextConfig | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["disabled", "auto"] | None = None
    include: list[str] | None = None
    background: bool | None = None
    top_logprobs: int | None = None  # with include ["message.output_text.logprobs"]
    structured_outputs: dict[str, Any] | None = None  # vLLM's extension, instead of text.format
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: variables for the model's chat template

    def check_supported(self) -> None:
        refuse_if(self.previous_response_id is not None, "previous_response_id",
                  "is not supported: this server stores no responses; send the whole conversation as input")
        refuse_if(bool(self.background), "background")
        other = [i for i in self.include or () if i != OUTPUT_TEXT_LOGPROBS]
        refuse_if(bool(other), "include", f"supports only {OUTPUT_TEXT_LOGPROBS!r}, got {str(other[:1])[:80]}")
        refuse_if(self.reasoning is not None and any(v is not None for v in self.reasoning.values()), "reasoning")

    def generation_sampling(self) -> dict[str, Any]:
        # the llm's refusals name its keys and inputs: here the client's are max_output_tokens and input
        sampling = Sampling(self.sampling(self.max_output_tokens), {"max_tokens": "max_output_tokens",
                                                                    C.MESSAGES: "input"})
        fmt = self.text.format if self.text is not None else None
        constraint = None if fmt is None else structured_from_format(fmt, "text.format", "")
        if constraint is not None and self.structured_outputs is not None:  # as vLLM refuses it
            raise bad_request("structured_outputs: cannot be combined with text.format", STRUCTURED_OUTPUTS)
        sampling.put(STRUCTURED_OUTPUTS, constraint or self.structured_outputs,
                     "text.format" if constraint is not None else STRUCTURED_OUTPUTS)
        if OUTPUT_TEXT_LOGPROBS in (self.include or ()):  # vLLM's rule: logprobs only when included
            sampling.put("logprobs", logprobs_count(True, self.top_logprobs), "top_logprobs")
        return sampling

    def tool_calling(self) -> dict[str, Any] | None:
        """Its function tools, tool_choice and parallel_tool_calls (openai_frontend.tools), None without tools."""
        tools = responses_tools(self.tools) if self.tools is not None else []
        return tools_request(tools, responses_tool_choice(self.tool_choice, tools), self.parallel_tool_calls)

    def conversation(self) -> Conversation:
        tools = self.tool_calling()
        turns: list[Turn] = []
        if self.instructions:
            turns.append(Turn("system", self.instructions))
        if isinstance(self.input, str):
            turns.append(Turn("user", self.input))
            return Conversation(turns, template_kwargs(self.chat_template_kwargs), tools=tools)
        if not self.input:
            raise OpenAIError(400, "input: must not be empty", param="input", code="invalid_value")
        for i, raw in enumerate(self.input):
            where = f"input[{i}]"
            kind = raw.get("type", "message") if isinstance(raw, dict) else None
            if kind == "function_call":  # joins the assistant turn before it, as vLLM joins them
                call = function_call_item(raw, where)
                last = turns[-1] if turns else None
                if last is not None and last.role == "assistant":
                    turns[-1] = replace(last, extra={"tool_calls": [*last.extra.get("tool_calls", []), call]})
                else:
                    turns.append(Turn("assistant", "", {"tool_calls": [call]}))
                continue
            if kind == "function_call_output":
                call_id, output = function_call_output_item(raw, where)
                turns.append(Turn("tool", output, {"tool_call_id": call_id}))
                continue
            if kind != "message":
                raise OpenAIError(400, f"{where}.type: unsupported input item type {kind!r}; messages, function_call "
                                  "and function_call_output are", param=f"{where}.type", code="invalid_value")
            message = validate(InputMessage, raw, where)
            if isinstance(message.content, str):
                turns.append(Turn(message.role, message.content))
            else:
                parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(message.content)]
                turns.append(Turn(message.role, parts))
        return Conversation(turns, template_kwargs(self.chat_template_kwargs), tools=tools).with_video_audio(
            self.use_audio_in_video())


def _part(raw: Any, where: str) -> Part:
    part = validate_part(raw, where, _PART_MODELS, PART_TYPES)
    if isinstance(part, (InputText, OutputText)):
        return part.text
    if isinstance(part, InputFile):  # read as the video, image or audio the file is
        _one_of(part, ("file_id", "file_data", "file_url"), where)
        if part.file_url is not None:
            if not part.file_url.startswith(VLLM_FILE_SCHEME):
                raise OpenAIError(400, f"{where}.file_url: only vllm-file://<file id> is supported (use "
                                  "input_video, input_image or input_audio for URLs)", param=f"{where}.file_url",
                                  code="invalid_url")
            return FileRef(url=_file_id(part.file_url, where, "file_url"), where=f"{where}.file_url")
        return file_ref(part.file_id, part.file_data, part.filename, where)
    if isinstance(part, InputAudioItem):
        _one_of(part, ("input_audio", "audio_url", "file_id"), where)
        if part.input_audio is not None:
            return AudioRef(url=audio_data_url(part.input_audio, f"{where}.input_audio"),
                            where=f"{where}.input_audio")
        if part.file_id is not None:
            return AudioRef(url=_file_id(part.file_id, where), where=f"{where}.file_id")
        return AudioRef(url=media_url(part.audio_url or "", None, f"{where}.audio_url", where),
                        where=f"{where}.audio_url")
    if isinstance(part, InputImage):
        if part.file_id is not None:
            return ImageRef(url=_file_id(part.file_id, where), where=f"{where}.file_id", uuid=part.uuid)
        if not part.image_url and part.uuid is None:
            raise OpenAIError(400, f"{where}: give image_url, file_id or the uuid of an image sent before",
                              param=f"{where}.image_url", code="missing_required_parameter")
        url = media_url(part.image_url or "", part.uuid, f"{where}.image_url", where)
        return ImageRef(url=url, where=f"{where}.image_url", uuid=part.uuid)
    if isinstance(part, InputVideo):
        inner = part.video_url
        if part.file_id is not None:
            window = part_window(part.start, part.end, where)
            return VideoRef(url=_file_id(part.file_id, where), where=f"{where}.file_id", window=window,
                            uuid=part.uuid)
        if not inner and part.uuid is None:
            raise OpenAIError(400, f"{where}: give video_url, file_id or the uuid of a video sent before",
                              param=f"{where}.video_url", code="missing_required_parameter")
        url = "" if not inner else inner if isinstance(inner, str) else inner.url
        start = part.start if part.start is not None else getattr(inner, "start", None)
        end = part.end if part.end is not None else getattr(inner, "end", None)
        return VideoRef(url=media_url(url, part.uuid, f"{where}.video_url", where), where=f"{where}.video_url",
                        window=part_window(start, end, where), uuid=part.uuid)
    raise OpenAIError(400, f"{where}.type: unsupported content part", param=f"{where}.type")


def _one_of(part: Strict, fields: tuple[str, ...], where: str) -> None:
    """Refuses a part that gives none, or more than one, of ``fields`` (the first names the parameter)."""
    given = [k for k in fields if getattr(part, k) is not None]
    if len(given) != 1:
        raise OpenAIError(400, f"{where}: give exactly one of {', '.join(fields[:-1])} or {fields[-1]}",
                          param=f"{where}.{fields[0]}", code="missing_required_parameter" if not given
                          else "invalid_value")


def _file_id(value: str, where: str, field: str = "file_id") -> str:
    """A file_id must be a bare id (or vLLM's ``vllm-file://<id>``): it must not smuggle in a URL
    the fetcher would follow."""
    value = file_id_of(value, f"{where}.{field}")
    if not value.startswith("file-"):
        raise OpenAIError(404, f"{where}.{field}: no such file: {value[:80]!r}", param=f"{where}.{field}",
                          code="file_not_found")
    return value
