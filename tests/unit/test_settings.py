"""The shim's settings on pydantic-settings: where values come from, and how bad ones are refused."""

from __future__ import annotations

import pytest

from openai_frontend.settings import DOCS, Settings, build_parser


def test_settings_ignore_the_environment_when_built_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLT_PORT", "1234")
    assert Settings().port == 8080
    assert Settings.load().port == 1234  # load() reads the process's environment by default
    assert Settings.load([], {}).port == 8080  # ... and only the mapping it is given otherwise


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True), ("on", True),
                                               ("0", False), ("false", False), ("no", False), ("off", False)])
def test_settings_load_parses_bool_spellings_when_set_in_the_environment(raw: str, expected: bool) -> None:
    assert Settings.load([], {"VLT_FOLLOW_REDIRECTS": raw}).follow_redirects is expected


def test_settings_load_treats_an_empty_variable_as_unset_when_the_environment_is_read() -> None:
    s = Settings.load([], {"VLT_LOG_LEVEL": "", "VLT_MAX_VIDEOS": "3", "VLT_NOT_A_SETTING": "x", "OTHER": "y"})
    assert (s.log_level, s.max_videos) == ("info", 3)


def test_settings_load_takes_typed_values_when_numbers_come_from_env_and_flags() -> None:
    s = Settings.load(["--fetch-timeout-s", "2.5", "--no-follow-redirects"],
                      {"VLT_TRITON_TIMEOUT_S": "7", "VLT_MAX_UPLOAD_BYTES": "1048576", "VLT_FOLLOW_REDIRECTS": "1"})
    assert (s.fetch_timeout_s, s.triton_timeout_s, s.max_upload_bytes, s.follow_redirects) == (2.5, 7.0, 1048576, False)
    assert isinstance(s.triton_timeout_s, float) and isinstance(s.max_upload_bytes, int)


def test_settings_error_names_the_env_var_and_flag_when_a_value_does_not_parse() -> None:
    with pytest.raises(ValueError, match=r"^setting max_videos \(VLT_MAX_VIDEOS, --max-videos\): .*integer.*'many'"):
        Settings.load([], {"VLT_MAX_VIDEOS": "many"})


@pytest.mark.parametrize(("changes", "message"), [
    ({"max_videos": 0}, "setting max_videos must be positive, got 0"),
    ({"fetch_timeout_s": -1.0}, "setting fetch_timeout_s must be positive, got -1.0"),
    ({"port": 70000}, "setting port must be 0..65535, got 70000"),
    ({"log_level": "loud"}, "setting log_level must be debug|info|warning|error, got 'loud'"),
    ({"allowed_media_schemes": "ftp"}, "setting allowed_media_schemes takes http and/or https, got 'ftp'"),
])
def test_settings_refuse_a_bad_value_with_the_message_as_written_when_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings(**changes)
    assert str(info.value) == message


def test_settings_accept_zero_where_it_means_off_when_built() -> None:
    s = Settings(files_ttl_s=0, videos_ttl_s=0, max_context_tokens=0, triton_grpc_port=0)
    assert (s.files_ttl_s, s.videos_ttl_s, s.max_context_tokens) == (0, 0, 0)


def test_settings_refuse_an_unknown_name_when_built() -> None:
    with pytest.raises(ValueError, match="setting max_vidoes: .*no such setting"):
        Settings(max_vidoes=2)


def test_settings_are_frozen_and_with_validates_again_when_copied() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.port = 1  # type: ignore[misc]
    assert s.with_(port=9000).port == 9000 and s.port == 8080
    assert s.with_(port=9000) == Settings(port=9000) and hash(Settings()) == hash(s)
    with pytest.raises(ValueError, match="setting port must be 0..65535"):
        s.with_(port=-1)


def test_docs_and_flags_cover_every_setting_when_generated() -> None:
    assert list(DOCS) == list(Settings.model_fields)
    env, flag, default, doc = DOCS["max_media_bytes"]
    assert (env, flag, default) == ("VLT_MAX_MEDIA_BYTES", "--max-media-bytes", 512 * 1024 * 1024) and doc
    assert all(doc for *_, doc in DOCS.values())
    args = build_parser().parse_args(["--playground", "--max-videos", "2", "--fetch-timeout-s", "1.5"])
    assert (args.playground, args.max_videos, args.fetch_timeout_s, args.host) == (True, 2, 1.5, None)
