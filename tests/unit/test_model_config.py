"""config.pbtxt read with protobuf's text_format as tritonserver reads it (video_pipeline.model_config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_pipeline import model_config
from video_pipeline.contract import config_parameters
from video_pipeline.model_config import ModelConfigError

REPO = Path(__file__).resolve().parents[2] / "model_repository"
CONFIGS = sorted(REPO.glob("*/config.pbtxt"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_read_returns_the_message_named_like_its_folder_when_a_repository_config_is_read(path: Path) -> None:
    assert model_config.read(path.parent).name == path.parent.name
    assert model_config.read(path) == model_config.read(path.parent)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_to_text_round_trips_when_a_repository_config_is_written_back(path: Path) -> None:
    config = model_config.read(path)
    assert model_config.parse(model_config.to_text(config)) == config


def test_parameters_are_strings_with_comments_skipped_when_parsed() -> None:
    text = '''
    name: "m"  # a comment
    # parameters: { key: "commented_out" value: { string_value: "1" } }
    parameters: { key: "empty" value: { string_value: "" } }
    parameters [
      { key: "quoted" value: { string_value: "a \\"b\\" c" } },
      { key: "spread"
        value {
          string_value: "x" }
      }
    ]
    '''
    assert config_parameters(text) == {"empty": "", "quoted": 'a "b" c', "spread": "x"}


def test_decoder_parameters_include_the_cache_size_when_the_committed_config_is_read() -> None:
    params = model_config.parameters(model_config.read(REPO / "video_decoder"))
    assert params["cache_max_bytes"] == "2147483648" and params["served_model"] == "../llm/1/model.json"


@pytest.mark.parametrize("text", ['name: "m" instance_groups [ { count: 2 } ]',  # misspelt field
                                  'name: "m" max_batch_size: "eight"',  # wrong type
                                  'name: "m" instance_group [ { kind: KIND_TPU } ]',  # unknown enum value
                                  'parameters: { key: "a" value: { string_value: "unterminated } }'])
def test_parse_raises_naming_the_file_when_the_text_is_not_a_model_config(text: str) -> None:
    with pytest.raises(ModelConfigError, match=r"^models/m/config\.pbtxt: \d+:\d+ "):
        model_config.parse(text, "models/m/config.pbtxt")


def test_read_raises_naming_the_path_when_the_file_is_broken(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text('name: "m"\nbackend: python\n')
    with pytest.raises(ModelConfigError, match=rf"{tmp_path}/config\.pbtxt: 2:"):
        model_config.read(tmp_path)


def test_importing_the_module_leaves_tritonclient_unloaded_when_nothing_is_parsed() -> None:
    import subprocess
    import sys

    code = "import sys, video_pipeline.model_config; sys.exit('tritonclient' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO.parent).returncode == 0
