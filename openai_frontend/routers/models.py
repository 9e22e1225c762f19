"""GET /v1/models and /v1/models/{model}."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from openai_frontend.routers.common import check_model, service_of

logger = logging.getLogger(__name__)
router = APIRouter()


async def _card(request: Request) -> dict:
    """OpenAI's model object, plus our extension ``media``: the served model's effective media
    settings (where each value came from) and the engine limits the budgets follow."""
    service = service_of(request)
    card = {"id": service.model_name, "object": "model", "created": request.app.state.started_at,
            "owned_by": "video-llm-triton"}
    try:
        card["media"] = await service.media_settings()
    except Exception as exc:  # noqa: BLE001 - the card stays useful while Triton is still loading
        logger.debug("media settings unavailable: %s", exc)
    return card


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [await _card(request)]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict:
    check_model(model, service_of(request))
    return await _card(request)
