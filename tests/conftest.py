"""Shared fixtures: the real tritonserver with the real vLLM engine (one per test session)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.built_once import built_once, start_run
from tests.servers import serving
from tests.stores import PostgresCluster, S3Server

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = ROOT / "model_repository"
TINY_MODEL = ROOT / ".tiny" / "qwen2_vl"  # model_repository/llm/1/model.json points here
TINY_WAN = ROOT / ".tiny" / "wan"  # model_repository/video_generator/1/pipeline.json points here
ALL_MODELS = ["video_decoder", "video_preprocessor", "video_media", "llm", "video_llm", "video_generator"]


def pytest_configure(config: pytest.Config) -> None:
    start_run()  # before pytest-xdist starts its workers: they share this run's tiny models
    # Keep thread pools from oversubscribing the 2-core CI machine, and every cache in the repo.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(ROOT / ".cache" / "vllm"))
    os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that break the shared server (an engine killed on purpose) run after all the others. With
    # `make test PYTEST_WORKERS=2` (pytest-xdist, --dist loadscope: each module whole in one process, in
    # collection order) the destructive module is also the last handed out, so nothing runs on a stack
    # after it was broken; each process starts its own session stack when it first needs one.
    items.sort(key=lambda item: item.get_closest_marker("destructive") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report tells how each tritonserver of this process stands: a server that died under a
    test (CI shows only the report) gets its exit status and its log's tail beside the traceback."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    from video_pipeline.launch import TritonServer

    for server in TritonServer.started():
        status = server.exit_status()
        if status is not None:
            report.sections.append((f"tritonserver {server.grpc_url} {status}", server.log_tail(60)))


def build_tiny_model(arch: str = "qwen2_vl", out: Path = TINY_MODEL) -> Path:
    """The tiny ``arch`` model in ``out``, built once in this test run."""
    return built_once(out, lambda folder: subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_tiny_model.py"), "--arch", arch, "--out", str(folder)],
        check=True,
    ))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_wan() -> Path:
    """The tiny random-weight Wan pipeline (diffusers), built offline in seconds."""
    return built_once(TINY_WAN, lambda folder: subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_tiny_wan.py"), "--out", str(folder)], check=True))


@pytest.fixture(scope="session")
def shared_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim's Files API directory, which the session's tritonserver also reads (its decoder's media_root)."""
    return tmp_path_factory.mktemp("shim_files")


@pytest.fixture(scope="session")
def triton(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
           tiny_wan: Path, shared_files: Path) -> Iterator:
    """A real tritonserver on free loopback ports with every model of the repository loaded; its
    video_decoder reads videos by path under ``shared_files``, as the launcher sets it up."""
    from video_pipeline.launch import TritonServer
    from video_pipeline.steps import MEDIA_ROOT_ENV

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(MODEL_REPOSITORY, ALL_MODELS, log_path=log, ready_timeout_s=600,
                          env={MEDIA_ROOT_ENV: str(shared_files.resolve())})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n--- tritonserver log ({log}) ---\n{log.read_text(errors='replace')[-20000:]}")


# --- the OpenAI shim on the session's tritonserver ------------------------------------------------


class HttpMedia:
    """A folder served over HTTP on 127.0.0.1 (a free port): ``put(name, data)`` returns its URL;
    ``redirect(name, location)`` and ``route(name, handler)`` add answers of other kinds."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.port = port
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}

    def put(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return self.url(name)

    def route(self, name: str, handler: Callable[[BaseHTTPRequestHandler], None]) -> str:
        """``handler(request)`` answers GET /<name> itself (slow bodies, lying headers, ...)."""
        self.routes["/" + name] = handler
        return self.url(name)

    def redirect(self, name: str, location: str, status: int = 302) -> str:
        def answer(request: BaseHTTPRequestHandler) -> None:
            request.send_response(status)
            request.send_header("Location", location)
            request.send_header("Content-Length", "0")
            request.end_headers()

        return self.route(name, answer)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def http_media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpMedia]:
    """Media for the shim to download, from a local ThreadingHTTPServer (never the internet)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = tmp_path_factory.mktemp("http_media")
    media = HttpMedia(folder)

    class Quiet(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            route = media.routes.get(self.path)
            if route is None:
                super().do_GET()
                return
            try:
                route(self)
            except OSError:  # the client left (a test of timeouts or caps)
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    server.daemon_threads = True
    media.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="http-media", daemon=True)
    thread.start()
    try:
        yield media
    finally:
        server.shutdown()
        server.server_close()


class Shim:
    """The OpenAI-compatible app served by uvicorn in a background thread."""

    def __init__(self, base_url: str, settings: object, media_dir: Path, triton: object, app: object = None) -> None:
        self.base_url = base_url  # http://127.0.0.1:<port>
        self.settings = settings
        self.media_dir = media_dir  # file:// URLs inside it are allowed
        self.triton = triton
        self.app = app  # the FastAPI app (its state.service reaches the real Triton backend)

    def client(self, **kwargs: object):  # noqa: ANN201 - openai.OpenAI, imported lazily
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="x", max_retries=0, timeout=300, **kwargs)


@pytest.fixture(scope="session")
def shim(triton, http_media: HttpMedia, tmp_path_factory: pytest.TempPathFactory,
         shared_files: Path) -> Iterator[Shim]:
    """The shim on a free loopback port, talking to the session's tritonserver over gRPC.

    Media URLs may reach exactly the ``http_media`` server on loopback (its address and port, nothing
    else on this machine), and redirects are followed so that every hop's check is exercised.
    """


    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend
    from openai_frontend.settings import Settings
    from video_pipeline.launch import free_port

    media_dir = tmp_path_factory.mktemp("shim_media")
    settings = Settings(model_repository=str(MODEL_REPOSITORY), allowed_media_networks=f"127.0.0.1:{http_media.port}",
                        follow_redirects=True, playground=True,
                        allowed_local_media_path=str(media_dir), port=free_port(),
                        files_dir=str(shared_files), triton_files_dir=str(shared_files.resolve()))
    app = create_app(settings, TritonBackend(triton.grpc_url, timeout_s=120))
    with serving(app, settings.port, "shim") as url:
        yield Shim(url, settings, media_dir, triton, app)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl on a temp dir, a free loopback port), stopped at the end."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a thread on a free loopback port, with the tests' bucket."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()

