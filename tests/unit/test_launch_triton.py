"""The launcher's decoder scale on a real tritonserver: the loaded video_decoder runs what was chosen."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from video_pipeline.launch import TritonServer, decoder_scale, usable_cores

pytestmark = pytest.mark.e2e
MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def _config(server: TritonServer) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/video_decoder/config", timeout=10) as resp:
        return json.loads(resp.read())


def _scale(config: dict) -> tuple[int, str | None]:
    threads = config.get("parameters", {}).get("threads", {}).get("string_value")
    return config["instance_group"][0]["count"], threads


def test_launcher_loads_video_decoder_scaled_to_the_cores_when_defaults(tmp_path: Path) -> None:
    expected = decoder_scale(usable_cores())
    with TritonServer(MODEL_REPOSITORY, ["video_decoder"], log_path=tmp_path / "triton.log",
                      decoder_scale="cores", decoder_instances=0, decoder_threads=0) as server:
        assert _scale(_config(server)) == (expected.instances, str(expected.threads))


def test_launcher_loads_video_decoder_with_forced_scale_and_it_serves(tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    with TritonServer(MODEL_REPOSITORY, ["video_decoder"], log_path=tmp_path / "triton.log",
                      decoder_scale="cores", decoder_instances=3, decoder_threads=1) as server:
        assert _scale(_config(server)) == (3, "1")
        log = Path(server.log_path).read_text(errors="replace")
        assert "video_decoder_0_2" in log  # the third instance exists
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            # an empty request (no videos) is valid and answers with empty outputs: the reloaded model serves
            opts = httpclient.InferInput("video_options", [0], "BYTES")
            opts.set_data_from_numpy(np.array([], dtype=np.object_))
            result = client.infer("video_decoder", [opts])
            assert result.as_numpy("frames").shape[0] == 0
        finally:
            client.close()


def test_launcher_keeps_config_pbtxt_when_scale_is_config(tmp_path: Path) -> None:
    with TritonServer(MODEL_REPOSITORY, ["video_decoder"], log_path=tmp_path / "triton.log",
                      decoder_scale="config") as server:
        assert _scale(_config(server)) == (2, None)


def test_tritonserver_loads_a_decoder_config_written_back_by_text_format_when_edited(tmp_path: Path,
                                                                                   tiny_model: Path) -> None:
    """A config.pbtxt parsed, edited as a ModelConfig message and written with text_format is one
    tritonserver loads as it says (what a script editing the repository's configs would produce)."""
    import shutil

    from video_pipeline import model_config

    config = model_config.read(MODEL_REPOSITORY / "video_decoder")
    config.instance_group[0].count = 1
    served = (MODEL_REPOSITORY / "video_decoder" / config.parameters["served_model"].string_value).resolve()
    config.parameters["served_model"].string_value = str(served)
    repo = tmp_path / "repository"
    shutil.copytree(MODEL_REPOSITORY / "video_decoder" / "1", repo / "video_decoder" / "1")
    (repo / "video_decoder" / "config.pbtxt").write_text(model_config.to_text(config))
    with TritonServer(repo, ["video_decoder"], log_path=tmp_path / "triton.log", decoder_scale="config") as server:
        loaded = _config(server)
        assert _scale(loaded) == (1, None)
        assert loaded["parameters"]["served_model"]["string_value"] == str(served)
