"""The launcher's decoder scale: the choice from the cores (pure) and how it reaches tritonserver."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from video_pipeline import launch
from video_pipeline.launch import (
    DecoderScale,
    LaunchError,
    TritonServer,
    decoder_scale,
    scaled_decoder_config,
)
from video_pipeline.media.cores import cgroup_cpu_limit

# --- the choice ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cores", "expected"), [
    (1, DecoderScale(1, 1)),
    (2, DecoderScale(2, 1)),
    (3, DecoderScale(3, 1)),
    (8, DecoderScale(8, 1)),
    (12, DecoderScale(8, 1)),
    (16, DecoderScale(8, 2)),
    (32, DecoderScale(8, 4)),
    (64, DecoderScale(8, 8)),
])
def test_decoder_scale_returns_one_instance_per_core_then_threads_when_defaults(cores: int,
                                                                                expected: DecoderScale) -> None:
    assert decoder_scale(cores) == expected


def test_decoder_scale_never_oversubscribes_when_every_instance_is_busy() -> None:
    for cores in range(1, 129):
        scale = decoder_scale(cores)
        assert scale.instances * scale.threads <= cores
        assert scale.instances >= 1 and scale.threads >= 1


def test_decoder_scale_shares_cores_among_forced_instances_when_threads_unset() -> None:
    assert decoder_scale(16, instances=2) == DecoderScale(2, 8)
    assert decoder_scale(2, instances=4) == DecoderScale(4, 1)  # never 0 threads (0 would mean "FFmpeg picks")


def test_decoder_scale_keeps_forced_threads_when_given() -> None:
    assert decoder_scale(16, threads=3) == DecoderScale(8, 3)
    assert decoder_scale(2, instances=1, threads=4) == DecoderScale(1, 4)


@pytest.mark.parametrize("kwargs", [{"cores": 0}, {"cores": 2, "instances": -1}, {"cores": 2, "threads": -2},
                                    {"cores": 2, "max_instances": 0}, {"cores": True}, {"cores": 2.0}])
def test_decoder_scale_raises_when_an_argument_is_out_of_range(kwargs: dict) -> None:
    with pytest.raises(LaunchError, match="decoder scale"):
        decoder_scale(**kwargs)


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1),
    ("", None), (None, None), ("garbage", None), ("x 100000", None), ("0 100000", None),
])
def test_cgroup_cpu_limit_returns_whole_cores_when_a_quota_is_set(cpu_max: str | None, expected: int | None) -> None:
    assert cgroup_cpu_limit(cpu_max) == expected


def test_usable_cores_returns_at_most_the_affinity() -> None:
    import os

    assert 1 <= launch.usable_cores() <= len(os.sched_getaffinity(0))


def _config(count: int = 2, kind: str = "KIND_CPU", threads: str | None = None, workers: str | None = None) -> dict:
    params = {"max_width": {"string_value": "8192"}, "served_model": {"string_value": "../llm/1/model.json"}}
    for name, value in (("threads", threads), ("workers", workers)):
        if value is not None:
            params[name] = {"string_value": value}
    return {"name": "video_decoder", "backend": "python",
            "instance_group": [{"name": "video_decoder_0", "kind": kind, "count": count, "gpus": []}],
            "parameters": params}


def test_scaled_decoder_config_sets_count_and_threads_when_cores_differ() -> None:
    config = _config()
    out = scaled_decoder_config(config, cores=16)
    assert out is not None
    assert out["instance_group"][0]["count"] == 8
    assert out["parameters"]["threads"] == {"string_value": "2"}
    # everything else is the configuration as loaded, and the input is not modified
    assert out["parameters"]["served_model"] == config["parameters"]["served_model"]
    assert config["instance_group"][0]["count"] == 2 and "threads" not in config["parameters"]


def test_scaled_decoder_config_sets_one_thread_when_two_cores() -> None:
    out = scaled_decoder_config(_config(), cores=2)
    assert out is not None
    assert out["instance_group"][0]["count"] == 2 and out["parameters"]["threads"] == {"string_value": "1"}


def test_scaled_decoder_config_returns_none_when_already_scaled() -> None:
    assert scaled_decoder_config(_config(count=2, threads="1", workers="2"), cores=2) is None


@pytest.mark.parametrize(("cores", "workers"), [(1, "1"), (2, "2"), (16, "8"), (32, "8")])
def test_scaled_decoder_config_sets_one_decode_slot_per_threads_worth_of_cores(cores: int, workers: str) -> None:
    out = scaled_decoder_config(_config(), cores=cores)
    assert out is not None and out["parameters"]["workers"] == {"string_value": workers}


def test_scaled_decoder_config_keeps_workers_when_config_pbtxt_sets_them() -> None:
    out = scaled_decoder_config(_config(workers="1"), cores=16)
    assert out is not None and out["parameters"]["workers"] == {"string_value": "1"}
    with pytest.raises(LaunchError, match="workers must be an integer"):
        scaled_decoder_config(_config(workers="two"), cores=16)


def test_scaled_decoder_config_keeps_threads_when_config_pbtxt_sets_them() -> None:
    out = scaled_decoder_config(_config(threads="3"), cores=16)
    assert out is not None
    assert out["instance_group"][0]["count"] == 8 and out["parameters"]["threads"] == {"string_value": "3"}


def test_scaled_decoder_config_changes_only_the_scale_when_the_committed_config_is_scaled() -> None:
    from google.protobuf import json_format

    from video_pipeline import model_config

    committed = model_config.read(launch.Path(__file__).resolve().parents[2] / "model_repository" / "video_decoder")
    out = scaled_decoder_config(json_format.MessageToDict(committed, preserving_proto_field_name=True), cores=16)
    assert out is not None
    scaled = json_format.ParseDict(out, type(committed)())  # strict: a misspelt field would raise here
    assert (scaled.instance_group[0].count, scaled.parameters["threads"].string_value,
            scaled.parameters["workers"].string_value) == (8, "2", "8")
    scaled.instance_group[0].count = committed.instance_group[0].count
    del scaled.parameters["threads"], scaled.parameters["workers"]
    assert scaled == committed


def test_scaled_decoder_config_returns_none_when_instances_are_on_gpus() -> None:
    assert scaled_decoder_config(_config(kind="KIND_GPU"), cores=16) is None


def test_scaled_decoder_config_returns_none_when_several_instance_groups() -> None:
    config = _config()
    config["instance_group"].append(dict(config["instance_group"][0], name="video_decoder_1"))
    assert scaled_decoder_config(config, cores=16) is None


def test_scaled_decoder_config_raises_when_threads_parameter_is_not_an_integer() -> None:
    with pytest.raises(LaunchError, match="threads"):
        scaled_decoder_config(_config(threads="many"), cores=2)


def test_triton_server_reads_decoder_settings_from_env_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(launch.DECODER_INSTANCES_ENV, "3")
    monkeypatch.setenv(launch.DECODER_THREADS_ENV, "2")
    monkeypatch.setenv(launch.DECODER_SCALE_ENV, "config")
    s = TritonServer(launch.Path("model_repository"), ["video_decoder"])
    assert (s.decoder_scale, s.decoder_instances, s.decoder_threads) == ("config", 3, 2)


@pytest.mark.parametrize(("name", "value"), [(launch.DECODER_INSTANCES_ENV, "-1"), (launch.DECODER_THREADS_ENV, "x"),
                                             (launch.DECODER_SCALE_ENV, "always")])
def test_triton_server_raises_when_a_decoder_env_var_is_bad(monkeypatch: pytest.MonkeyPatch, name: str,
                                                            value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(LaunchError, match=name):
        TritonServer(launch.Path("model_repository"), ["video_decoder"])


# --- the wiring, against a fake Triton HTTP endpoint ------------------------------------------------


class FakeTriton:
    """Answers readiness, a model's config and the repository load API like tritonserver does."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.loads: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/v2/models/video_decoder/config":
                    self._send(200, json.dumps(outer.config).encode())
                elif self.path.endswith("/ready"):
                    self._send(200 if "video_decoder" in self.path else 400, b"")
                else:
                    self._send(404, b"")

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.loads.append({"path": self.path, **body})
                outer.config = json.loads(body["parameters"]["config"])
                self._send(200, b"")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])


@pytest.fixture
def fake_triton() -> Iterator[FakeTriton]:
    fake = FakeTriton(_config())
    yield fake
    fake.httpd.shutdown()


def _server(fake: FakeTriton, **kwargs: object) -> TritonServer:
    return TritonServer(launch.Path("model_repository"), ["video_decoder"], http_port=fake.port, **kwargs)


def test_scale_decoder_reloads_video_decoder_with_override_when_cores_differ(
        fake_triton: FakeTriton, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "usable_cores", lambda: 16)
    _server(fake_triton, decoder_scale="cores").scale_decoder()
    assert [load["path"] for load in fake_triton.loads] == ["/v2/repository/models/video_decoder/load"]
    assert fake_triton.config["instance_group"][0]["count"] == 8
    assert fake_triton.config["parameters"]["threads"] == {"string_value": "2"}


def test_scale_decoder_uses_forced_instances_and_threads_when_given(
        fake_triton: FakeTriton, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    _server(fake_triton, decoder_scale="cores", decoder_instances=3, decoder_threads=2).scale_decoder()
    assert fake_triton.config["instance_group"][0]["count"] == 3
    assert fake_triton.config["parameters"]["threads"] == {"string_value": "2"}


def test_scale_decoder_leaves_config_when_scale_is_config(fake_triton: FakeTriton) -> None:
    _server(fake_triton, decoder_scale="config").scale_decoder()
    assert fake_triton.loads == []


def test_scale_decoder_does_not_reload_when_config_already_matches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTriton(_config(count=2, threads="1", workers="2"))
    try:
        monkeypatch.setattr(launch, "usable_cores", lambda: 2)
        _server(fake, decoder_scale="cores").scale_decoder()
        assert fake.loads == []
    finally:
        fake.httpd.shutdown()


def test_scale_decoder_does_nothing_when_video_decoder_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTriton(_config())
    try:
        s = TritonServer(launch.Path("model_repository"), ["llm"], http_port=fake.port, decoder_scale="cores")
        monkeypatch.setattr(s, "_ready", lambda model: False)
        s.scale_decoder()
        assert fake.loads == []
    finally:
        fake.httpd.shutdown()


def test_main_passes_decoder_flags_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_start(self: TritonServer) -> TritonServer:
        seen.update(scale=self.decoder_scale, instances=self.decoder_instances, threads=self.decoder_threads)
        raise KeyboardInterrupt

    monkeypatch.setattr(TritonServer, "start", fake_start)
    with pytest.raises(KeyboardInterrupt):
        launch.main(["--load-model", "video_decoder", "--decoder-instances", "4", "--decoder-threads", "1",
                     "--decoder-scale", "config"])
    assert seen == {"scale": "config", "instances": 4, "threads": 1}
