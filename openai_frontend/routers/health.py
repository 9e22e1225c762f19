"""GET /health (the shim is alive), /health/ready (Triton's models are ready; also GET/POST /ping, vLLM's name),
/metrics (Prometheus).

With several tritonservers, /health/ready is ready while at least one is, and its body reports each
endpoint's state (``endpoints``: url -> state, error, in_flight)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.errors import OpenAIError
from openai_frontend.routers.common import service_of

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    backend = service_of(request).backend
    is_ready = await backend.ready()
    states = getattr(backend, "endpoint_states", None)  # a pool of tritonservers
    endpoints = states() if states is not None else None
    if is_ready:
        return JSONResponse({"status": "ready"} if endpoints is None else {"status": "ready", "endpoints": endpoints})
    if endpoints is not None:
        down = "; ".join(f"{url}: {s['state']}" + (f" ({s['error']})" if s["error"] else "")
                         for url, s in endpoints.items())
        raise OpenAIError(503, f"no tritonserver endpoint has llm and video_media ready: {down}", code="not_ready")
    raise OpenAIError(503, "tritonserver's llm and video_media models are not ready", code="not_ready")


@router.get("/ping")
@router.post("/ping")
async def ping(request: Request) -> Response:
    """vLLM's (and SageMaker's) readiness probe: /health/ready's answer, for GET and POST."""
    return await ready(request)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = service_of(request).metrics.render()
    return Response(body, media_type=content_type)
