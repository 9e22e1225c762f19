"""One command, one port: start tritonserver (all models, free loopback ports) and the shim.

    python -m openai_frontend [--port 8080] [--triton-url host:port[,host:port...]] ...

With ``--triton-url`` (or ``VLT_TRITON_URL``) the shim joins a running server
instead; with several, a health-checked pool of them (openai_frontend.backend.pool).
SIGINT/SIGTERM stop the shim (in-flight streams are cancelled) and then
tritonserver. The started tritonserver is supervised: if it exits (killed, crashed)
its processes are reaped and it is restarted with backoff on the same ports
(video_pipeline.launch.Supervisor); VLT_TRITON_MODELS (comma-separated) picks its models. Every flag: ``python -m openai_frontend --help``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from openai_frontend.app import create_app
from openai_frontend.backend.pool import backend_for
from openai_frontend.logging_config import configure_logging
from openai_frontend.settings import Settings
from video_pipeline.log_format import LOG_FORMAT_ENV

logger = logging.getLogger("openai_frontend")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    settings = Settings.load(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format)
    os.environ[LOG_FORMAT_ENV] = settings.log_format  # the models' stubs (children of tritonserver) log alike
    # SIGTERM while tritonserver starts must stop it too (it runs in its own process group).
    signal.signal(signal.SIGTERM, _interrupt)
    triton = None
    try:
        if not settings.triton_url:
            from video_pipeline.launch import Supervisor, TritonServer, models_from_env
            from video_pipeline.steps import MEDIA_ROOT_ENV

            log = Path(settings.triton_log_file) if settings.triton_log_file else None
            # Same machine, same disk: the decoder reads uploaded videos from the Files API's directory.
            files_root = str(Path(settings.files_dir).resolve())
            server = TritonServer(Path(settings.model_repository), models_from_env(), log_path=log,
                                  http_port=settings.triton_http_port, grpc_port=settings.triton_grpc_port,
                                  metrics_port=settings.triton_metrics_port, ready_timeout_s=900,
                                  env={MEDIA_ROOT_ENV: files_root})
            logger.info("starting tritonserver on %s (log %s)", settings.model_repository, log or "a temporary file")
            # Supervised: restarted (same ports, the shim reconnects) if it exits, and killed with this process.
            triton = Supervisor(server)
            triton.start()
            logger.info("tritonserver ready: gRPC %s, log %s", server.grpc_url, server.log_path)
            settings = settings.with_(triton_url=server.grpc_url, triton_files_dir=settings.triton_files_dir or files_root)
        backend = backend_for(settings.triton_urls, timeout_s=settings.triton_timeout_s)
        app = create_app(settings, backend)
        logger.info("serving model %r at http://%s:%d/v1", settings.model_name, settings.host, settings.port)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                               log_level=settings.log_level.lower(), timeout_graceful_shutdown=5,
                                               # our handler and our access lines (with request ids) instead
                                               log_config=None, access_log=False))
        server.run()  # handles SIGINT/SIGTERM itself: stops accepting, cancels streams, returns
    except KeyboardInterrupt:
        logger.info("signal received; shutting down")
    finally:
        if triton is not None:
            logger.info("stopping tritonserver")
            triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
