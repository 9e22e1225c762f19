"""vLLM's extra endpoints and fields end to end: the real OpenAI SDK (and plain HTTP for vLLM's own routes)
-> shim -> tritonserver -> the llm model's vLLM engine and tokenizer (tiny Qwen2-VL).

/v1/completions (llm's raw text_input path, with vLLM's logprobs and logit_bias), /tokenize and /detokenize (the llm model's tokenizer and chat
template), /version, /ping, chat_template_kwargs reaching the template, and file parts read as the media
their files are (an image's file id as Responses input_file, chat's {"type": "file"} part); the engine's
refusals naming the client's parameter (Responses max_output_tokens and input, chat max_completion_tokens).
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest

from tests.e2e.test_llm import _inputs, stream, text_of
from tests.videos import make_frame

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"
PROMPT = "The quick brown fox"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def png(index: int = 5) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(make_frame(index, 96, 128)).save(buf, format="PNG")
    return buf.getvalue()


def post(shim, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{shim.base_url}{path}", json=body, timeout=120)


def tokenize(shim, **body: object) -> dict:
    r = post(shim, "/tokenize", {"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


# --- /v1/completions ------------------------------------------------------------------------------------


def test_sdk_completions_answer_the_llms_raw_prompt_text_when_not_streamed(shim) -> None:
    r = shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL and r.id.startswith("cmpl-")
    (choice,) = r.choices
    assert choice.index == 0 and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens == tokenize(shim, prompt=PROMPT)["count"]
    # the same as the llm model answers its text_input over gRPC: the engine did the work
    direct = stream(shim.triton.grpc_url, "llm", _inputs(
        text_input=PROMPT, sampling_parameters=json.dumps({"max_tokens": 6, "temperature": 0})))
    assert choice.text == text_of(direct)


def test_sdk_completions_stream_the_same_text_with_usage_when_streamed(shim) -> None:
    client = shim.client()
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_sdk_completions_answer_each_prompt_and_choice_when_given_a_list_and_n(shim) -> None:
    r = shim.client().completions.create(model=MODEL, prompt=[PROMPT, "Hello"], max_tokens=3, n=2, temperature=0.8,
                                         seed=0, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.text.startswith(PROMPT) for c in r.choices[:2]) and r.choices[2].text.startswith("Hello")
    assert r.usage.completion_tokens == 12
    counts = tokenize(shim, prompt=PROMPT)["count"] + tokenize(shim, prompt="Hello")["count"]
    assert r.usage.prompt_tokens == counts


def test_sdk_completions_answer_400_naming_the_parameter_when_the_engine_refuses_it(shim) -> None:
    with pytest.raises(openai.BadRequestError) as info:  # more than the engine's max_logprobs (20)
        shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, logprobs=25)
    assert (info.value.body["param"], info.value.body["code"]) == ("logprobs", "invalid_value"), info.value.body
    assert "20" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=-1)
    assert "temperature" in info.value.body["message"] and info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:  # outside the vocabulary: vLLM's refusal, named
        shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, logit_bias={"999999": 5})
    assert info.value.body["param"] == "logit_bias" and "vocab" in info.value.body["message"]


@pytest.mark.parametrize(("body", "param"), [({"suffix": " the end"}, "suffix"), ({"prompt": [1, 2, 3]}, "prompt"),
                                             ({"prompt": [[1, 2]]}, "prompt")])
def test_sdk_completions_answer_400_naming_what_this_server_cannot_take_when_sent(shim, body, param) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().completions.create(**{"model": MODEL, "prompt": PROMPT, "max_tokens": 2, **body})
    assert info.value.body["param"] == param, info.value.body


def check_legacy_logprobs(logprobs, text: str, tokens: int, top: int) -> None:
    """The legacy shape as vLLM answers it: per token its text, logprob, the top ones with the sampled token,
    and where it starts in the text; greedy, so the sampled token is the most likely one."""
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == tokens
    assert "".join(logprobs.tokens) == text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:k]) for k in range(tokens)]
    for token, logprob, best in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert logprob <= 0 and 1 <= len(best) <= top + 1
        assert best[token] == logprob == max(best.values())


def test_sdk_completions_answer_legacy_logprobs_of_every_token_when_logprobs_is_given(shim) -> None:
    r = shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    (choice,) = r.choices
    check_legacy_logprobs(choice.logprobs, choice.text, r.usage.completion_tokens, 3)
    assert r.usage.completion_tokens == 6
    assert max(len(best) for best in choice.logprobs.top_logprobs) == 3  # greedy: the sampled one is among the top 3
    alone = shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=0)
    assert alone.choices[0].text == choice.text and alone.choices[0].logprobs.tokens == choice.logprobs.tokens
    assert all(len(best) == 1 for best in alone.choices[0].logprobs.top_logprobs)
    assert alone.choices[0].logprobs.token_logprobs == pytest.approx(choice.logprobs.token_logprobs, abs=1e-3)


def test_sdk_completions_stream_chunks_carry_their_tokens_logprobs_when_streamed(shim) -> None:
    client = shim.client()
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2,
                                            stream=True))
    tokens, offsets, text = [], [], ""
    for chunk in chunks:
        (choice,) = chunk.choices
        if choice.logprobs is None:
            assert not choice.text
            continue
        assert "".join(choice.logprobs.tokens) == choice.text
        assert choice.logprobs.text_offset[:1] in ([], [len(text)])  # offsets count the choice's whole text
        tokens += choice.logprobs.tokens
        offsets += choice.logprobs.text_offset
        text += choice.text
    assert text == whole.choices[0].text and tokens == whole.choices[0].logprobs.tokens
    assert offsets == whole.choices[0].logprobs.text_offset


def test_sdk_completions_make_greedy_output_that_token_when_its_logit_bias_is_100(shim) -> None:
    r = shim.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0,
                                         logit_bias={"97": 100})  # the byte-level vocabulary's "a"
    assert r.choices[0].text == "a" * 4


# --- the client's parameter names in the engine's refusals ---------------------------------------------


CONTEXT = 16384  # max_model_len of model_repository/llm/1/model.json


def responses_refusal(shim, **body: object) -> dict:
    """The error body of a Responses request the server must refuse with a 400, streamed and not."""
    errors = []
    for streamed in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            answer = shim.client().responses.create(model=MODEL, stream=streamed, **body)
            if streamed:
                list(answer)
        errors.append(info.value.body)
    assert errors[0] == errors[1]
    return errors[0]


def test_sdk_responses_refusal_names_max_output_tokens_when_it_does_not_fit_the_context(shim) -> None:
    err = responses_refusal(shim, input="Hi", max_output_tokens=10**9)
    assert (err["param"], err["code"]) == ("max_output_tokens", "context_length_exceeded"), err
    assert f"{10**9} in the completion" in err["message"] and "max_tokens" not in err["message"]
    assert "in the input" in err["message"] and "messages" not in err["message"]


def test_sdk_responses_refusal_names_max_output_tokens_when_vllm_refuses_its_value(shim) -> None:
    err = responses_refusal(shim, input="Hi", max_output_tokens=-1)
    assert (err["param"], err["code"]) == ("max_output_tokens", "integer_below_min_value"), err
    assert "max_output_tokens must be at least 1" in err["message"]


def test_sdk_responses_refusal_names_input_when_the_conversation_is_over_the_context(shim) -> None:
    err = responses_refusal(shim, input=" ".join(["word"] * (CONTEXT + 2000)), max_output_tokens=4)
    assert (err["param"], err["code"]) == ("input", "context_length_exceeded"), err
    assert f"maximum context length is {CONTEXT} tokens" in err["message"] and "messages" not in err["message"]


def test_sdk_chat_refusal_names_max_completion_tokens_when_the_client_set_it(shim) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=CONTEXT + 1000)
    err = info.value.body
    assert (err["param"], err["code"]) == ("max_completion_tokens", "context_length_exceeded"), err
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=-1)
    err = info.value.body
    assert (err["param"], err["code"]) == ("max_completion_tokens", "integer_below_min_value"), err
    assert "max_completion_tokens must be at least 1" in err["message"]


# --- /tokenize, /detokenize --------------------------------------------------------------------------


def test_tokenize_then_detokenize_gives_the_text_back_when_given_a_prompt(shim) -> None:
    text = "Videos are sequences of frames."
    doc = tokenize(shim, prompt=text, return_token_strs=True)
    assert doc["count"] == len(doc["tokens"]) == len(doc["token_strs"]) and doc["max_model_len"] == 16384
    r = post(shim, "/detokenize", {"model": MODEL, "tokens": doc["tokens"]})
    assert r.status_code == 200 and r.json() == {"prompt": text}


def test_tokenize_counts_messages_as_a_chat_with_the_same_messages_counts_them(shim) -> None:
    doc = tokenize(shim, messages=MESSAGES)
    r = shim.client().chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1, temperature=0)
    assert doc["count"] == r.usage.prompt_tokens
    text = post(shim, "/detokenize", {"tokens": doc["tokens"]}).json()["prompt"]
    assert text.endswith("Name a colour.<|im_end|>\n<|im_start|>assistant\n")
    ended = tokenize(shim, messages=MESSAGES, add_generation_prompt=False)
    assert ended["tokens"] == doc["tokens"][:ended["count"]] and ended["count"] < doc["count"]


def test_tokenize_and_detokenize_answer_400_when_the_request_is_bad(shim) -> None:
    assert post(shim, "/tokenize", {"prompt": "a", "messages": MESSAGES}).status_code == 400
    r = post(shim, "/detokenize", {"tokens": [1, 10**9]})
    assert r.status_code == 400 and "not a token id" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "tokens[1]" and r.json()["error"]["code"] == "invalid_value"
    assert httpx.get(f"{shim.base_url}/health/ready", timeout=30).status_code == 200  # the server stays up


# --- /version, /ping ---------------------------------------------------------------------------------


def test_version_and_ping_answer_when_the_stack_is_up(shim) -> None:
    version = httpx.get(f"{shim.base_url}/version", timeout=30)
    assert version.status_code == 200 and version.json()["version"] == "0.1.0"
    assert version.json()["vllm_version"].startswith("0.32")
    assert httpx.get(f"{shim.base_url}/ping", timeout=30).status_code == 200
    assert httpx.post(f"{shim.base_url}/ping", timeout=30).status_code == 200


# --- chat_template_kwargs ------------------------------------------------------------------------------


def test_chat_template_kwargs_reach_the_template_when_a_variable_it_reads_is_set(shim) -> None:
    image = "data:image/png;base64," + base64.b64encode(png()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                             {"type": "text", "text": "What is it?"}]}]
    client = shim.client()

    def prompt_tokens(**kwargs: object) -> int:
        r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0,
                                           extra_body=kwargs)
        return r.usage.prompt_tokens

    plain = prompt_tokens()
    # Qwen2-VL's template reads add_vision_id ("Picture 1: " before the image); it ignores enable_thinking
    assert prompt_tokens(chat_template_kwargs={"add_vision_id": True}) == plain + tokenize(
        shim, prompt="Picture 1: ")["count"]
    assert prompt_tokens(chat_template_kwargs={"enable_thinking": False}) == plain


def test_chat_template_kwargs_answer_400_naming_them_when_not_an_object(shim) -> None:
    for bad, param in (("yes", "chat_template_kwargs"), ({"tokenize": True}, "chat_template_kwargs.tokenize")):
        with pytest.raises(openai.BadRequestError) as info:
            shim.client().chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                                  extra_body={"chat_template_kwargs": bad})
        assert info.value.body["param"] == param


# --- file parts ----------------------------------------------------------------------------------------


def test_responses_input_file_with_an_images_file_id_is_answered_as_that_image(shim) -> None:
    client = shim.client()
    file_id = client.files.create(file=("still.png", png(7), "image/png"), purpose="vision").id
    asked = {"role": "user", "content": [{"type": "input_file", "file_id": file_id},
                                         {"type": "input_text", "text": "What is it?"}]}
    r = client.responses.create(model=MODEL, input=[asked], max_output_tokens=4, temperature=0)
    assert r.status == "incomplete" or r.status == "completed"
    as_image = client.responses.create(model=MODEL, input=[{**asked, "content": [
        {"type": "input_image", "file_id": file_id}, asked["content"][1]]}], max_output_tokens=4, temperature=0)
    assert r.usage.input_tokens == as_image.usage.input_tokens and r.output_text == as_image.output_text


def test_chat_file_part_is_answered_as_the_image_its_file_holds(shim) -> None:
    client = shim.client()
    file_id = client.files.create(file=("still.png", png(9), "image/png"), purpose="vision").id
    text = {"type": "text", "text": "What is it?"}
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_id": file_id}}, text]}], max_tokens=4, temperature=0)
    same = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": file_id}}, text]}], max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens == same.usage.prompt_tokens > 20
    assert r.choices[0].message.content == same.choices[0].message.content
