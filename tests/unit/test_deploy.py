"""deploy/: the Kubernetes manifests cannot be applied here (no cluster), so they are validated and linted.

Every object is checked against the Kubernetes OpenAPI schemas that the ``kubernetes-validate`` package
bundles (strict: an unknown field is an error), with the network blocked to prove the check is offline.
The kustomize overlay is rendered by the small strategic-merge subset below and validated too. KServe's
InferenceService is a CRD with no core schema: deploy/kserve/inferenceservice.schema.json (written from
KServe's API reference) checks its structure, and its predictor's pod fields are validated as a core
PodSpec. Then the lint: env names real settings, probes name served paths, ports and names line up, and
/dev/shm holds the decoder's media cache.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from openai_frontend.routers.health import router as health_router
from openai_frontend.settings import Settings, env_name
from video_pipeline.engines.versions import ALLOW_ANY_VLLM_ENV
from video_pipeline.log_format import LOG_FORMAT_ENV
from video_pipeline.steps import MEDIA_ROOT_ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
KSERVE_SCHEMA = DEPLOY / "kserve" / "inferenceservice.schema.json"
# The oldest Kubernetes these manifests promise (README) and the newest schemas the validator bundles.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
REPOSITORY_MODELS = sorted(p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt"))
TRITON_PATHS = {"/v2/health/ready", "/v2/health/live"} | {f"/v2/models/{m}/ready" for m in REPOSITORY_MODELS}
# Environment variables tritonserver's models read (not shim settings).
TRITON_VLT_ENV = {LOG_FORMAT_ENV, MEDIA_ROOT_ENV, ALLOW_ANY_VLLM_ENV}
# What the decoder's /dev/shm must hold beside its media cache: Python-backend tensors of the requests in
# flight (decoded frames of a long video, two decoder instances) and vLLM's workers' shared memory.
SHM_HEADROOM = 4 * 2**30
NAMESPACED_EXEMPT = {"Namespace"}


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def manifest_files() -> list[Path]:
    """Every complete Kubernetes object file under deploy/ (not kustomizations, patches or the CRD)."""
    patches = {
        (d / p["path"]).resolve() for d in [BASE, *OVERLAYS] for p in kustomization(d).get("patches", [])
    }
    return sorted(
        p for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml" and p.resolve() not in patches and p != KSERVE
    )


# --- a strategic-merge subset: what the overlays use (kustomize itself is not installable from PyPI) ---

def merge(base: Any, patch: Any) -> Any:
    """Dicts merge key by key (None deletes); lists of named items merge by name ($patch: delete drops one)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(base[key], value) if key in base else strip_directives(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(x, dict) and "name" in x for x in [*base, *patch]
    ):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            index = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                assert index is not None, f"patch deletes {item['name']!r}, which is not there"
                del out[index]
            elif index is None:
                out.append(strip_directives(item))
            else:
                out[index] = merge(out[index], item)
        return out
    return copy.deepcopy(patch)


def strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items() if k != "$patch" and v is not None}
    if isinstance(value, list):
        return [strip_directives(v) for v in value]
    return value


def render(directory: Path) -> list[dict]:
    """The objects ``kubectl apply -k directory`` would create, for the kustomize features deploy/ uses."""
    k = kustomization(directory)
    unknown = set(k) - {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
    assert not unknown, f"{directory}: kustomize fields this test does not render: {unknown}"
    docs: list[dict] = []
    for resource in k["resources"]:
        path = directory / resource
        docs += render(path) if path.is_dir() else load_all(path)
    for entry in k.get("patches", []):
        for patch in load_all(directory / entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
            assert len(hits) == 1, f"{entry['path']}: patches {key}, found {len(hits)} such objects"
            if patch.get("$patch") == "delete":
                del docs[hits[0]]
            else:
                docs[hits[0]] = merge(docs[hits[0]], patch)
    for doc in docs:
        if "namespace" in k and doc["kind"] not in NAMESPACED_EXEMPT:
            doc["metadata"]["namespace"] = k["namespace"]
        for image in k.get("images", []):
            for container in containers_of(doc):
                if container["image"] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


# --- walking the objects ---

def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]
    return None


def containers_of(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec.get("containers", [])] if spec else []


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def env_of(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def quantity(q: str | int) -> float:
    """A Kubernetes quantity (8Gi, 500m, 64Gi, 2) as a number."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(q))
    assert m, f"not a quantity: {q!r}"
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "m": 1e-3}.get(m.group(2) or "", 1)
    return float(m.group(1)) * scale


def probes(container: dict) -> Iterator[tuple[str, dict]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield kind, container[kind]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


@pytest.fixture(scope="module")
def kserve() -> dict:
    (doc,) = load_all(KSERVE)
    return doc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup fails: the validator must work from its bundled schemas alone."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network blocked by tests/unit/test_deploy.py")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def validate(doc: dict, version: str) -> None:
    """Strict: a field the schema does not know (a typo) fails too. The message names the field's path."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return
    except kubernetes_validate.ValidationError as exc:
        problem = f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')} (Kubernetes {version}): {problem}", pytrace=False)


# --- schema validation ---

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_manifest_is_a_valid_kubernetes_object_when_checked_offline(path, version, no_network) -> None:
    docs = load_all(path)
    assert docs, f"{path}: no object"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_kustomization_renders_valid_objects_when_checked_offline(directory, version, no_network) -> None:
    for doc in render(directory):
        validate(doc, version)


def test_deploy_validator_rejects_a_misspelt_field_when_strict(base) -> None:
    doc = copy.deepcopy(find(base, "Deployment", "shim"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_deploy_kustomization_lists_every_manifest_of_its_folder() -> None:
    for directory in [BASE, *OVERLAYS]:
        k = kustomization(directory)
        listed = {r for r in k["resources"] if not (directory / r).is_dir()} | {p["path"] for p in k.get("patches", [])}
        present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, f"{directory}: listed {sorted(listed)}, present {sorted(present)}"


def test_deploy_files_pvc_overlay_runs_one_shim_on_the_embedded_store() -> None:
    docs = render(DEPLOY / "overlays" / "files-pvc")
    shim = find(docs, "Deployment", "shim")
    assert shim["spec"]["replicas"] == 1 and shim["spec"]["strategy"] == {"type": "Recreate"}
    env = env_of(shim["spec"]["template"]["spec"]["containers"][0])
    assert not {"VLT_FILES_BACKEND", "VLT_S3_ENDPOINT_URL", "VLT_S3_BUCKET", "VLT_DATABASE_URL"} & set(env)
    assert Settings.load(environ={k: v for k, v in env.items() if v}).files_backend == "local"
    (files,) = [v for v in shim["spec"]["template"]["spec"]["volumes"] if v["name"] == "files"]
    assert files == {"name": "files", "persistentVolumeClaim": {"claimName": "shim-files"}}
    find(docs, "PersistentVolumeClaim", "shim-files")
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
                and d["metadata"]["name"] == "shim"]


def test_deploy_kserve_inferenceservice_matches_kserves_fields_and_a_core_podspec(kserve, no_network) -> None:
    schema = json.loads(KSERVE_SCHEMA.read_text())
    jsonschema.validate(kserve, schema)
    predictor = kserve["spec"]["predictor"]
    extension = set(schema["$defs"]["predictor"]["properties"]) - {"containers"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": kserve["metadata"]["name"]},
           "spec": {k: v for k, v in predictor.items() if k not in extension}}
    for version in K8S_VERSIONS:
        validate(pod, version)
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_deploy_kserve_schema_rejects_a_predictor_without_a_model_or_containers(kserve) -> None:
    doc = copy.deepcopy(kserve)
    doc["spec"]["predictor"].pop("containers")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads(KSERVE_SCHEMA.read_text()))


# --- lint ---

def test_deploy_shim_env_names_only_settings_of_the_shim_and_parses(base) -> None:
    known = {env_name(f) for f in Settings.model_fields}
    (container,) = find(base, "Deployment", "shim")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    settings = Settings.load(argv=container.get("args", []), environ={k: v for k, v in env.items() if v})
    assert settings.host == "0.0.0.0" and settings.log_format == "json" and settings.files_backend == "s3"
    unknown = {k for k in env if k.startswith("VLT_")} - known
    assert not unknown, f"not settings of openai_frontend/settings.py: {unknown}"
    assert "VLT_DATABASE_URL" in env, "replicas sharing S3 need PostgreSQL for file records and jobs"


def test_deploy_triton_env_names_only_variables_its_models_read(base, kserve) -> None:
    for container in [*containers_of(find(base, "StatefulSet", "triton")), *containers_of(kserve)]:
        vlt = {k for k in env_of(container) if k.startswith("VLT_")}
        assert vlt <= TRITON_VLT_ENV, f"{container['name']}: {vlt - TRITON_VLT_ENV} is read by no model"


def test_deploy_probes_use_paths_the_servers_serve(base, kserve) -> None:
    shim_paths = {route.path for route in health_router.routes}
    for doc in [*base, kserve]:
        for container in containers_of(doc):
            is_shim = container.get("command", [])[:3] == ["python3", "-m", "openai_frontend"]
            served = shim_paths if is_shim else TRITON_PATHS
            kinds = {kind for kind, _ in probes(container)}
            assert kinds == {"startupProbe", "readinessProbe", "livenessProbe"}, container["name"]
            for kind, probe in probes(container):
                assert probe["httpGet"]["path"] in served, f"{container['name']} {kind}: {probe['httpGet']['path']}"
            if is_shim:
                assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
                assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            else:
                assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port, by number or name, as the container's declared port number."""
    declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in declared, f"{container['name']}: no port named {port!r}"
        return declared[port]
    return port


def test_deploy_probe_ports_are_the_containers_http_ports(base) -> None:
    for doc in base:
        for container in containers_of(doc):
            for kind, probe in probes(container):
                number = container_port(container, probe["httpGet"]["port"])
                expected = 8080 if container["name"] == "shim" else 8000
                assert number == expected, f"{container['name']} {kind} probes port {number}"


def test_deploy_services_select_pods_and_target_their_declared_ports(base) -> None:
    workloads = [d for d in base if pod_spec(d)]
    for service in [d for d in base if d["kind"] == "Service"]:
        selector = service["spec"]["selector"]
        (workload,) = [w for w in workloads
                       if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        (container,) = containers_of(workload)
        declared = {p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert container_port(container, port["targetPort"]) in declared
            assert container_port(container, port["targetPort"]) == port["port"], "Service and pod ports differ"


def test_deploy_workload_and_budget_selectors_match_their_pods(base) -> None:
    for doc in base:
        if pod_spec(doc):
            assert doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    for pdb in [d for d in base if d["kind"] == "PodDisruptionBudget"]:
        labels = pdb["spec"]["selector"]["matchLabels"]
        matching = [d for d in base if pod_spec(d) and labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, f"PDB {pdb['metadata']['name']} selects {len(matching)} workloads"


def test_deploy_shim_port_setting_is_its_container_port(base) -> None:
    (container,) = find(base, "Deployment", "shim")["spec"]["template"]["spec"]["containers"]
    assert int(env_of(container)["VLT_PORT"]) == container_port(container, "http")


def test_deploy_shim_triton_url_names_every_triton_pod_under_the_headless_service(base) -> None:
    triton = find(base, "StatefulSet", "triton")
    headless = find(base, "Service", triton["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    (grpc,) = [p for p in headless["spec"]["ports"] if p["name"] == "grpc"]
    (container,) = find(base, "Deployment", "shim")["spec"]["template"]["spec"]["containers"]
    urls = env_of(container)["VLT_TRITON_URL"].split(",")
    name, service = triton["metadata"]["name"], headless["metadata"]["name"]
    assert urls == [f"{name}-{i}.{service}:{grpc['port']}" for i in range(triton["spec"]["replicas"])]
    assert grpc["port"] == 8001


def test_deploy_hpa_scales_the_shim_on_a_metric_it_exports(base) -> None:
    hpa = find(base, "HorizontalPodAutoscaler", "shim")
    find(base, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    readme_metrics = set(re.findall(r"^\| `(vlt_[a-z_]+)", (ROOT / "README.md").read_text(), re.M))
    assert name in readme_metrics, f"{name} is not in README's metrics table"
    assert hpa["spec"]["minReplicas"] >= 2, "one shim cannot be drained without an outage"


def test_deploy_dev_shm_holds_the_decoders_media_cache_plus_headroom(base, kserve) -> None:
    from video_pipeline import model_config

    config = model_config.read(ROOT / "model_repository" / "video_decoder")
    cache = int(model_config.parameters(config)["cache_max_bytes"])
    for doc in [find(base, "StatefulSet", "triton"), kserve]:
        spec = pod_spec(doc)
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["emptyDir"]["medium"] == "Memory"
        shm = quantity(volume["emptyDir"]["sizeLimit"])
        assert shm >= cache + SHM_HEADROOM, f"/dev/shm {shm / 2**30:.1f} GiB < media cache + headroom"
        # A memory emptyDir counts against the container's memory limit: the processes need room beside it.
        assert quantity(container["resources"]["limits"]["memory"]) >= shm + 16 * 2**30


def test_deploy_triton_requests_a_whole_gpu_and_mounts_the_model_cache(base, kserve) -> None:
    for doc in [find(base, "StatefulSet", "triton"), kserve]:
        (container,) = containers_of(doc)
        resources = container["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        env = env_of(container)
        assert any(env["HF_HOME"].startswith(m["mountPath"] + "/") for m in container["volumeMounts"]
                   if m["name"] == "model-cache")


def test_deploy_triton_runs_the_dockerfiles_command(base, kserve) -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])\s*$", text, re.M)
    for doc in [find(base, "StatefulSet", "triton"), kserve]:
        (container,) = containers_of(doc)
        assert container["args"] == json.loads(cmd)


def test_deploy_llm_model_json_configmap_is_the_docker_example_and_mounted_where_both_read_it(base) -> None:
    config_map = find(base, "ConfigMap", "llm-model-json")
    example = json.loads((ROOT / "docker" / "models" / "qwen2_5_vl_7b.json").read_text())
    assert json.loads(config_map["data"]["model.json"]) == example
    for doc in [d for d in base if pod_spec(d)]:
        (container,) = containers_of(doc)
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models/llm/1/model.json"]
        (volume,) = [v for v in pod_spec(doc)["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == "llm-model-json" and mount["subPath"] == "model.json"


def test_deploy_containers_run_non_root_on_a_read_only_root_with_every_resource_bounded(base, kserve) -> None:
    for doc in [*base, kserve]:
        spec = pod_spec(doc)
        if not spec:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for container in containers_of(doc):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in writable, f"{container['name']}: nothing writable at /tmp on a read-only root"
