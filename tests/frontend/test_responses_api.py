"""POST /v1/responses on a fake backend."""

from __future__ import annotations

import pytest

from tests.frontend.conftest import MODEL, data_url, png, sse_named

VIDEO = b"\x00\x00\x00\x18ftypmp42"
PNG = png()  # a real one: the shim reads image headers


def respond(client, **body):
    return client.post("/v1/responses", json={"model": MODEL, **body})


def test_responses_maps_string_input_and_instructions_to_messages_when_given(client, backend) -> None:
    r = respond(client, input="Tell me.", instructions="Be brief.", max_output_tokens=9, temperature=0.2, top_p=0.5)
    assert r.status_code == 200, r.text
    req = backend.requests[0]
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me."}]
    assert req.sampling == {"max_tokens": 9, "temperature": 0.2, "top_p": 0.5}


def test_responses_maps_input_video_image_and_text_parts_when_given_a_message_list(client, backend) -> None:
    content = [
        {"type": "input_text", "text": "Compare"},
        {"type": "input_video", "video_url": data_url(VIDEO), "start": 1, "end": 3},
        {"type": "input_image", "image_url": data_url(PNG, "image/png")},
        {"type": "input_video", "video_url": {"url": data_url(VIDEO), "end": 2}},
    ]
    r = respond(client, input=[{"role": "user", "content": content},
                               {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
                media_io_kwargs={"video": {"num_frames": 4}})
    assert r.status_code == 200, r.text
    videos, options = backend.media_calls[0]
    assert videos == [VIDEO, VIDEO]
    assert options == [{"num_frames": 4, "start": 1.0, "end": 3.0}, {"num_frames": 4, "end": 2.0}]
    req = backend.requests[0]
    assert req.messages == [
        {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "video"}, {"type": "image"},
                                     {"type": "video"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]
    assert req.images == [PNG]


def test_responses_answers_a_response_object_with_usage_when_not_streaming(client, backend) -> None:
    body = respond(client, input=[{"role": "user", "content": [{"type": "input_video", "video_url": data_url(VIDEO)}]}],
                   max_output_tokens=3).json()
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["model"] == MODEL and body["error"] is None and body["incomplete_details"] is None
    (item,) = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "text": "Hello world!", "annotations": [], "logprobs": []}]
    assert body["usage"] == {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0, "video_tokens": 12},
                             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": 23}
    assert body["max_output_tokens"] == 3


def test_responses_reports_incomplete_when_max_output_tokens_cut_the_answer(client, backend) -> None:
    backend.finish_reason = "length"
    body = respond(client, input="Hi", max_output_tokens=3).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_streams_the_responses_event_sequence_when_stream_is_true(client, backend) -> None:
    r = respond(client, input="Hi", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_named(r.text)
    names = [name for name, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [data["type"] for _, data in events] == names
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[0][1]["response"]["status"] == "in_progress"
    assert [d["delta"] for n, d in events if n == "response.output_text.delta"] == ["Hello", " world", "!"]
    assert events[7][1]["text"] == "Hello world!"
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello world!"
    assert final["usage"]["output_tokens"] == 3
    assert "[DONE]" not in r.text


def test_responses_ends_with_response_incomplete_when_streaming_hits_the_token_limit(client, backend) -> None:
    backend.finish_reason = "length"
    events = sse_named(respond(client, input="Hi", stream=True).text)
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("part", [
    {"type": "input_file", "file_id": "file-abc"},
    {"type": "input_image", "file_id": "file-abc"},
    {"type": "input_video", "file_id": "file-abc"},
])
def test_responses_answers_404_when_a_part_names_an_unknown_file_id(client, backend, part) -> None:
    r = respond(client, input=[{"role": "user", "content": [part]}])
    assert r.status_code == 404
    err = r.json()["error"]
    assert "no such file" in err["message"] and err["code"] == "file_not_found"
    assert err["param"] == "input[0].content[0].file_id"
    assert backend.requests == []


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"frobnicate": 1}, "frobnicate"),
])
def test_responses_answers_400_naming_the_parameter_when_it_is_unsupported(client, extra, param) -> None:
    r = respond(client, input="Hi", **extra)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == "unsupported_parameter"


def test_responses_answers_400_when_an_input_item_is_not_a_message(client) -> None:
    r = respond(client, input=[{"type": "reasoning", "summary": []}])
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].type"
