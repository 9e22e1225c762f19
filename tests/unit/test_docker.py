"""docker/: the GPU image and the compose file cannot be built here (no Docker engine, no GPU), so they are
linted: every file they copy or mount exists, they install from the same requirements file the tested setup
reads, the commands they run parse, and the engine-args examples are valid vLLM arguments."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from video_pipeline import contract as C

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
MODEL_JSONS = sorted((DOCKER / "models").glob("*.json"))
ENGINE_ARGS_FILES = [*MODEL_JSONS, ROOT / "model_repository" / "llm" / "1" / "model.json"]
# max_position_embeddings of each example's model (its config.json on the Hugging Face hub)
MODEL_CONTEXT = {
    "Qwen/Qwen2.5-VL-7B-Instruct": 128000,
    "Qwen/Qwen3-VL-8B-Instruct": 262144,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 262144,
}
REPOSITORY_MODELS = sorted(p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, "a continuation line ends the file"
    return out


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_dockerfile_builds_on_nvidias_triton_vllm_image_with_a_pinned_tag(dockerfile) -> None:
    args = dict(a.split("=", 1) for kind, a in dockerfile if kind == "ARG" and "=" in a)
    assert args.get("WITH_GENERATION") == "0"  # generation is opt-in
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-vllm-python-py3", args["TRITON_IMAGE"])
    assert dockerfile[[k for k, _ in dockerfile].index("FROM")][1] == "${TRITON_IMAGE}"


def test_dockerfile_copies_only_files_that_exist(dockerfile) -> None:
    for kind, rest in dockerfile:
        if kind == "COPY":
            *sources, _dest = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_installs_dependencies_from_the_requirements_files_only(dockerfile) -> None:
    installs = [rest for kind, rest in dockerfile if kind == "RUN" and "pip install" in rest]
    files = [f for rest in installs for f in re.findall(r"-r\s+([^\s;]+)", rest)]
    # the serving stack, and video generation's extras behind a build argument
    assert files == ["requirements/gpu.txt", "requirements/generation.txt"]
    assert all((ROOT / f).is_file() for f in files)
    # the package itself brings nothing else: its dependencies are the requirements file's
    assert any(re.search(r"--no-deps\s+\.(\s|$)", rest) for rest in installs)
    for rest in installs:
        assert "--no-cache-dir" in rest, f"pip without --no-cache-dir grows the image: {rest}"


def test_requirements_gpu_holds_the_gpu_extra_of_pyproject() -> None:
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    declared = {re.split(r"[\[<>=!~ ;]", x, maxsplit=1)[0].lower().replace("_", "-") for x in extra}
    assert declared <= requirement_names(ROOT / "requirements" / "gpu.txt")


def test_dockerfile_serves_every_model_of_the_repository_and_checks_health(dockerfile) -> None:
    kinds = [k for k, _ in dockerfile]
    cmd = json.loads(dockerfile[kinds.index("CMD")][1])  # exec form: signals reach tritonserver
    assert cmd[0] == "tritonserver" and "--model-repository=/models" in cmd
    loaded = {a.split("=", 1)[1] for a in cmd if a.startswith("--load-model=")}
    assert loaded <= set(REPOSITORY_MODELS)
    # what the shim and Triton clients call; video generation is opt-in on GPUs (docker/README.md)
    answering = (C.VIDEO_DECODER, C.VIDEO_PREPROCESSOR, C.VIDEO_MEDIA, C.LLM, C.VIDEO_LLM)
    assert {m.name for m in answering} <= loaded
    assert "HEALTHCHECK" in kinds
    assert not any(k == "RUN" and "apt-get install" in r and "--no-install-recommends" not in r
                   for k, r in dockerfile)


def test_compose_runs_tritonserver_on_gpus_and_the_shim_after_it_is_healthy(compose) -> None:
    triton, shim = compose["services"]["triton"], compose["services"]["shim"]
    assert (DOCKER / triton["build"]["context"] / triton["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert shim["image"] == triton["image"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert shim["depends_on"]["triton"]["condition"] == "service_healthy"
    for service in (triton, shim):
        assert service["healthcheck"]["test"][0] == "CMD"
    # users reach the shim; Triton's own ports are bound to the host's loopback only
    assert all(str(p).startswith("127.0.0.1:") for p in triton["ports"])


def test_compose_shim_command_and_environment_are_settings_the_shim_knows(compose) -> None:
    from openai_frontend.settings import DOCS, Settings, build_parser

    shim = compose["services"]["shim"]
    assert shim["command"][:3] == ["python3", "-m", "openai_frontend"]
    args = build_parser().parse_args(shim["command"][3:])  # exits on an unknown flag
    assert args.triton_url == "triton:8001" and args.host == "0.0.0.0"
    known = {env for env, *_ in DOCS.values()}
    for service in compose["services"].values():
        for name in service.get("environment", {}):
            assert not name.startswith("VLT_") or name in known, f"{name} is not a setting"
    env = {k: re.sub(r"\$\{\w+:-(.*)\}", r"\1", str(v)) for k, v in shim["environment"].items()}
    Settings.load(["--model-repository", str(ROOT / "model_repository")], env)  # the values parse


def test_compose_mounts_files_that_exist(compose) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = re.sub(r"\$\{\w+:-(.*?)\}", r"\1", volume.rsplit(":", 2)[0] if volume.count(":") >= 2
                            else volume.split(":", 1)[0])
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{volume}: {source} does not exist"


@pytest.mark.parametrize("path", ENGINE_ARGS_FILES, ids=[str(p.relative_to(ROOT)) for p in ENGINE_ARGS_FILES])
def test_model_json_keys_are_async_engine_args_fields_when_checked_against_installed_vllm(path: Path) -> None:
    import dataclasses

    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    args = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(arg_utils.AsyncEngineArgs)}
    assert set(args) <= fields, f"{path.name}: not AsyncEngineArgs fields: {sorted(set(args) - fields)}"
    assert args["model"] and args["served_model_name"]


@pytest.mark.parametrize("path", MODEL_JSONS, ids=[p.stem for p in MODEL_JSONS])
def test_model_json_examples_run_as_they_are_when_mounted(path: Path, compose: dict) -> None:
    from openai_frontend.settings import DOCS

    args = json.loads(path.read_text())
    # a real Hugging Face id whose context we know, and a max_model_len inside it
    assert args["model"] in MODEL_CONTEXT, f"{path.name}: add {args['model']!r} and its context to MODEL_CONTEXT"
    assert 0 < args["max_model_len"] <= MODEL_CONTEXT[args["model"]]
    assert args["tensor_parallel_size"] >= 1 and 0 < args["gpu_memory_utilization"] <= 0.95
    # vLLM must take every video and image the shim lets one request carry
    shim_env = compose["services"]["shim"].get("environment", {})
    for kind, setting in (("video", "max_videos"), ("image", "max_images")):
        env, _flag, default, _doc = DOCS[setting]
        allowed = int(re.sub(r"\$\{\w+:-(.*)\}", r"\1", str(shim_env.get(env, default))))
        assert args["limit_mm_per_prompt"][kind] >= allowed, f"{path.name}: {kind} limit below the shim's {env}"


def test_docker_files_leave_media_sizing_to_the_model_folder() -> None:
    # the media models read patch size and pixel bounds from the served model's processor files at load
    for path in [*DOCKER.rglob("*"), ROOT / "requirements" / "gpu.txt"]:
        if path.is_file():
            text = path.read_text()
            for word in ("default_patch_factor", "model_min_pixels", "model_max_pixels"):
                assert word not in text, f"{path.relative_to(ROOT)} still asks to set {word} per model"


def test_requirements_gpu_pins_the_vllm_series_the_code_supports() -> None:
    from video_pipeline.engines.versions import SUPPORTED_VLLM

    pins = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements" / "gpu.txt").read_text().splitlines()]
    (vllm,) = [p for p in pins if re.match(r"vllm\b", p)]
    assert vllm == f"vllm{SUPPORTED_VLLM}"


def test_dockerfile_checks_the_vllm_version_when_building(dockerfile) -> None:
    assert any(k == "RUN" and "check_vllm_version(" in r for k, r in dockerfile)


def test_numpy_pin_reaches_only_the_cpu_stack_when_installing(dockerfile) -> None:
    # requirements/numpy.txt (1.26) is for the tritonserver 2.51 stub of the CPU stack: scripts/setup.sh only
    assert "requirements/numpy.txt" in (ROOT / "scripts" / "setup.sh").read_text()
    assert not any("numpy.txt" in r for k, r in dockerfile if k == "RUN")
    for name in ("gpu.txt", "generation.txt"):
        path = ROOT / "requirements" / name
        lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
        assert "numpy" not in requirement_names(path) and not any("numpy.txt" in line for line in lines)
    # the image's own numpy (its stub is built for it) is noted before any install and put back after the last
    runs = [r for k, r in dockerfile if k == "RUN"]
    noted = next(i for i, r in enumerate(runs) if "numpy.__version__" in r)
    restored = next(i for i, r in enumerate(runs) if re.search(r"--no-deps\s+\"numpy==\$\(cat ", r))
    installs = [i for i, r in enumerate(runs) if re.search(r"pip install .*-r\s", r)]
    assert noted < min(installs) and restored > max(installs)


def test_docker_readme_names_the_same_image_and_files() -> None:
    readme = (DOCKER / "README.md").read_text()
    default = next(rest.split("=", 1)[1] for kind, rest in instructions(DOCKERFILE) if kind == "ARG")
    assert default in readme
    assert "compose.yaml" in readme
    for path in MODEL_JSONS:
        assert f"models/{path.name}" in readme, path.name
