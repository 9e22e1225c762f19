"""GET /health (the shim is alive), /health/ready (Triton's models are ready), /metrics (Prometheus)."""

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
    if await service_of(request).backend.ready():
        return JSONResponse({"status": "ready"})
    raise OpenAIError(503, "tritonserver's llm and video_media models are not ready", code="not_ready")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = service_of(request).metrics.render()
    return Response(body, media_type=content_type)
