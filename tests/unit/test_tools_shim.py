"""openai_frontend.tools without a server: the parser names it knows, and the shapes it converts."""

from __future__ import annotations

import pytest

from openai_frontend import tools
from openai_frontend.errors import OpenAIError


def test_vllm_tool_parsers_lists_the_installed_vllms_parsers_when_checked_against_it() -> None:
    registry = pytest.importorskip("vllm.tool_parsers")
    assert sorted(tools.VLLM_TOOL_PARSERS) == sorted(registry._TOOL_PARSERS_TO_REGISTER)


def test_responses_tools_become_chat_tools_with_only_the_fields_given() -> None:
    got = tools.responses_tools([{"type": "function", "name": "f", "description": "d", "strict": True}])
    assert got == [{"type": "function", "function": {"name": "f", "description": "d", "strict": True}}]


def test_responses_tool_choice_defaults_to_auto_and_names_a_function_in_chat_shape() -> None:
    defs = tools.responses_tools([{"type": "function", "name": "f"}])
    assert tools.responses_tool_choice(None, []) == "auto"
    assert tools.responses_tool_choice({"type": "function", "name": "f"}, defs) == {
        "type": "function", "function": {"name": "f"}}
    assert tools.response_tool_choice({"type": "function", "function": {"name": "f"}}) == {"type": "function",
                                                                                          "name": "f"}


def test_streamed_calls_merge_delta_fragments_into_whole_calls_in_order() -> None:
    calls = tools.StreamedCalls()
    assert calls.add([{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                      {"index": 1, "id": "b", "type": "function", "function": {"name": "g"}}]) == [
        (0, True, ""), (1, True, "")]
    assert calls.add([{"index": 0, "function": {"arguments": '{"x":'}}, {"index": 0, "function": {"arguments": "1}"}}]
                     ) == [(0, False, '{"x":'), (0, False, "1}")]
    assert calls.whole() == [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                             {"id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}]


def test_llm_document_refuses_auto_without_auto_tool_choice_and_adds_the_parser_otherwise() -> None:
    request = tools.tools_request(tools.chat_tools([{"type": "function", "function": {"name": "f"}}]), "auto", None)
    with pytest.raises(OpenAIError) as err:
        tools.llm_document(request, "hermes", False)
    assert err.value.param == "tool_choice"
    assert tools.llm_document(request, "hermes", True)["tool_call_parser"] == "hermes"
    assert tools.llm_document(None, "", False) is None


@pytest.mark.parametrize("arguments, ok", [('{"a": 1}', True), ("", True), ("{", False), ("[]", False), (3, False)])
def test_checked_arguments_takes_only_json_objects(arguments: object, ok: bool) -> None:
    if ok:
        assert tools.checked_arguments(arguments, "p") == arguments
    else:
        with pytest.raises(OpenAIError):
            tools.checked_arguments(arguments, "p")
