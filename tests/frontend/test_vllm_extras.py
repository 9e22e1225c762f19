"""vLLM's extra endpoints and request fields on a fake backend: /v1/completions, /tokenize, /detokenize,
/version, /ping, chat_template_kwargs, and file parts read as the media their files are."""

from __future__ import annotations

import base64
import json

import pytest

from openai_frontend.backend.base import TokenizeRequest
from tests.frontend.conftest import MODEL, data_url, jpeg, sse_data
from tests.videos import ClipSpec, make_video


def error_of(r) -> dict:
    return r.json()["error"]


# --- /v1/completions ------------------------------------------------------------------------------------


def test_completions_sends_the_prompt_as_text_input_when_posted(client, backend) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon", "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "Hello world!", "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
    sent = backend.requests[0]
    assert sent.prompt == "Once upon" and sent.messages == [] and not sent.chat_template_kwargs
    assert sent.sampling == {"temperature": 0.0, "max_tokens": 16}  # OpenAI's and vLLM's default max_tokens


def test_completions_numbers_choices_per_prompt_when_several_prompts_and_n(client, backend) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "n": 2, "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert sorted(r.prompt for r in backend.requests) == ["a", "b"]
    assert body["usage"] == {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}


def test_completions_puts_the_prompt_first_when_echo(client) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "Say: ", "echo": True})
    assert r.json()["choices"][0]["text"] == "Say: Hello world!"


def test_completions_streams_text_chunks_and_usage_when_stream(client, backend) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "stream": True, "echo": True,
                                             "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    texts: dict[int, str] = {}
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        assert c["usage"] is None
    assert texts == {0: "aHello world!", 1: "bHello world!"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(r.stream for r in backend.requests)


@pytest.mark.parametrize(("field", "value"), [("suffix", "x"), ("best_of", 3), ("dry_run", True)])
def test_completions_refuses_by_name_when_a_field_is_not_supported(client, field, value) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "a", field: value})
    assert r.status_code == 400 and error_of(r)["param"] == field and error_of(r)["code"] == "unsupported_parameter"
    if field == "suffix":
        assert "fill-in-the-middle" in error_of(r)["message"]


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2]], []])
def test_completions_refuses_the_prompt_when_token_ids_or_empty(client, prompt) -> None:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": prompt})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"


def test_completions_answers_404_when_the_model_is_another(client) -> None:
    r = client.post("/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "a"})
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found"


def test_completions_answers_the_backend_error_when_generation_fails(client, backend) -> None:
    from video_pipeline.errors import InvalidInput

    backend.generate_error = InvalidInput("temperature must be non-negative")
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]})
    assert r.status_code == 400 and "temperature" in error_of(r)["message"]


# --- /tokenize, /detokenize --------------------------------------------------------------------------


def test_tokenize_answers_vllms_shape_when_given_a_prompt(client, backend) -> None:
    r = client.post("/tokenize", json={"model": MODEL, "prompt": "one two three", "return_token_strs": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 3, "max_model_len": 16384, "tokens": [0, 1, 2],
                        "token_strs": ["one", "two", "three"]}
    (sent,) = backend.tokenize_requests
    assert sent.prompt == "one two three" and sent.options == {"return_token_strs": True}


def test_tokenize_sends_the_chat_messages_and_template_kwargs_when_given_messages(client, backend) -> None:
    r = client.post("/tokenize", json={"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                       "add_generation_prompt": False, "chat_template_kwargs": {"x": 1}})
    assert r.status_code == 200, r.text
    assert r.json()["token_strs"] is None
    (sent,) = backend.tokenize_requests
    assert isinstance(sent, TokenizeRequest)
    assert sent.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent.chat_template_kwargs == {"x": 1, "add_generation_prompt": False, "continue_final_message": False}


def test_tokenize_refuses_media_parts_when_given_messages(client) -> None:
    r = client.post("/tokenize", json={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(jpeg(1), "image/jpeg")}}]}]})
    assert r.status_code == 400 and error_of(r)["param"] == "messages[0].content[0].image_url"


@pytest.mark.parametrize("body", [{}, {"prompt": "a", "messages": [{"role": "user", "content": "a"}]},
                                  {"prompt": "a", "add_generation_prompt": True}, {"prompt": 3}])
def test_tokenize_answers_400_when_the_body_is_not_one_shape(client, body) -> None:
    r = client.post("/tokenize", json=body)
    assert r.status_code == 400 and error_of(r)["param"]


def test_detokenize_answers_the_text_when_given_tokens(client, backend) -> None:
    r = client.post("/detokenize", json={"model": MODEL, "tokens": [3, 4]})
    assert r.status_code == 200 and r.json() == {"prompt": "w3 w4"}
    assert client.post("/detokenize", json={"tokens": []}).json() == {"prompt": ""}


def test_detokenize_answers_400_when_a_token_is_negative(client) -> None:
    r = client.post("/detokenize", json={"tokens": [1, -2]})
    assert r.status_code == 400 and error_of(r)["param"] == "tokens[1]"


# --- /version, /ping ---------------------------------------------------------------------------------


def test_version_answers_the_package_version_when_asked(client) -> None:
    body = client.get("/version").json()
    assert body["version"] == "0.1.0" and "vllm_version" in body


@pytest.mark.parametrize("method", ["get", "post"])
def test_ping_answers_200_when_ready_and_503_when_not(client, backend, method) -> None:
    assert getattr(client, method)("/ping").status_code == 200
    backend.is_ready = False
    r = getattr(client, method)("/ping")
    assert r.status_code == 503 and error_of(r)["code"] == "not_ready"


# --- chat_template_kwargs ------------------------------------------------------------------------------


def test_chat_sends_chat_template_kwargs_when_given(client, backend) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                  "chat_template_kwargs": {"enable_thinking": False}})
    assert r.status_code == 200, r.text
    assert backend.requests[0].chat_template_kwargs == {"enable_thinking": False, "add_generation_prompt": True,
                                                        "continue_final_message": False}


def test_chat_sends_no_template_kwargs_when_none_given(client, backend) -> None:
    client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert backend.requests[0].chat_template_kwargs == {}


def test_chat_top_level_add_generation_prompt_wins_when_kwargs_say_otherwise(client, backend) -> None:
    client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                              "chat_template_kwargs": {"add_generation_prompt": False}})
    assert backend.requests[0].chat_template_kwargs["add_generation_prompt"] is True  # as vLLM merges them


def test_responses_sends_chat_template_kwargs_when_given(client, backend) -> None:
    r = client.post("/v1/responses", json={"model": MODEL, "input": "hi", "chat_template_kwargs": {"a": 1}})
    assert r.status_code == 200, r.text
    assert backend.requests[0].chat_template_kwargs["a"] == 1


@pytest.mark.parametrize(("kwargs", "param"), [("yes", "chat_template_kwargs"), ([1], "chat_template_kwargs"),
                                               ({"tokenize": True}, "chat_template_kwargs.tokenize"),
                                               ({"chat_template": "{{ x }}"}, "chat_template_kwargs.chat_template")])
def test_chat_answers_400_naming_chat_template_kwargs_when_not_an_object_or_refused(client, kwargs, param) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                  "chat_template_kwargs": kwargs})
    assert r.status_code == 400 and error_of(r)["param"] == param, r.text


def test_chat_answers_400_when_continue_final_message_meets_add_generation_prompt(client) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                  "continue_final_message": True, "add_generation_prompt": True})
    assert r.status_code == 400 and error_of(r)["param"] == "continue_final_message"


# --- file parts ----------------------------------------------------------------------------------------


def upload(client, data: bytes, name: str, mime: str) -> str:
    r = client.post("/v1/files", files={"file": (name, data, mime)}, data={"purpose": "vision"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


def test_responses_reads_an_image_file_as_an_image_when_input_file_names_it(client, backend) -> None:
    image = jpeg(90)
    file_id = upload(client, image, "a.jpg", "image/jpeg")
    r = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": [{"type": "input_file", "file_id": file_id}]}]})
    assert r.status_code == 200, r.text
    assert backend.requests[0].images == [image] and not backend.requests[0].videos


def test_responses_reads_a_video_file_as_a_video_when_input_file_names_it(client, backend, clip) -> None:
    file_id = upload(client, clip, "c.mp4", "video/mp4")
    r = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": [{"type": "input_file", "file_id": file_id}]}]})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [clip]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_chat_reads_a_file_part_as_its_files_media_when_given_a_file_id(client, backend, clip, kind) -> None:
    data, name, mime = (jpeg(30), "a.jpg", "image/jpeg") if kind == "image" else (clip, "c.mp4", "video/mp4")
    file_id = upload(client, data, name, mime)
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": file_id}}, {"type": "text", "text": "What is it?"}]}]})
    assert r.status_code == 200, r.text
    sent = backend.requests[0]
    assert sent.messages[0]["content"][0] == {"type": kind}
    assert (sent.images == [data]) if kind == "image" else (backend.media_calls[0][0] == [data])


@pytest.mark.parametrize("with_url", [True, False])
def test_chat_reads_file_data_by_its_type_when_inline(client, backend, with_url) -> None:
    image = jpeg(70)
    b64 = base64.b64encode(image).decode()
    file = {"file_data": f"data:image/jpeg;base64,{b64}"} if with_url else {"file_data": b64, "filename": "x.jpg"}
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "file", "file": file}]}]})
    assert r.status_code == 200, r.text
    assert backend.requests[0].images == [image]


@pytest.mark.parametrize("file", [{"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                                  {"file_data": "JVBERi0xLjQ=", "filename": "a.pdf"}, {"file_data": "JVBERi0xLjQ="}])
def test_chat_answers_415_when_the_file_is_no_media(client, file) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "file", "file": file}]}]})
    assert r.status_code == 415 and error_of(r)["param"] == "messages[0].content[0].file.file_data"


@pytest.mark.parametrize(("file", "status", "param"), [
    ({}, 400, "messages[0].content[0].file.file_id"),
    ({"file_id": "file-x", "file_data": "aGk="}, 400, "messages[0].content[0].file.file_id"),
    ({"file_id": "file-nope"}, 404, "messages[0].content[0].file.file_id"),
    ({"file_id": "https://example.com/a.mp4"}, 404, "messages[0].content[0].file.file_id"),
])
def test_chat_answers_4xx_naming_the_file_part_when_it_is_wrong(client, file, status, param) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "file", "file": file}]}]})
    assert r.status_code == status and error_of(r)["param"] == param, r.text


def test_detokenize_names_the_bodys_token_when_the_llm_model_refuses_one(client, backend, monkeypatch) -> None:
    from video_pipeline.errors import InvalidInput

    async def refuse(token_ids, request_id):
        raise InvalidInput("token_ids[1]: 99 is not a token id of this model (0 to 9)", param="token_ids[1]",
                           code="invalid_value")

    monkeypatch.setattr(backend, "detokenize", refuse)
    r = client.post("/detokenize", json={"tokens": [1, 99]})
    assert r.status_code == 400 and error_of(r)["param"] == "tokens[1]" and error_of(r)["code"] == "invalid_value"
    assert error_of(r)["message"].startswith("tokens[1]: 99 is not a token id")
