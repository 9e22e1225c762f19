"""GET /v1/models and /v1/models/{model}."""

from __future__ import annotations

from fastapi import APIRouter, Request

from openai_frontend.routers.common import check_model, service_of

router = APIRouter()


def _card(request: Request) -> dict:
    service = service_of(request)
    return {"id": service.model_name, "object": "model", "created": request.app.state.started_at,
            "owned_by": "video-llm-triton"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_card(request)]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict:
    check_model(model, service_of(request))
    return _card(request)
