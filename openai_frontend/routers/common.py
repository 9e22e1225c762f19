"""What every router needs: the app's service and the model-name check."""

from __future__ import annotations

from fastapi import Request

from openai_frontend.errors import model_not_found
from openai_frontend.service import Service


def service_of(request: Request) -> Service:
    return request.app.state.service


def check_model(name: str, service: Service) -> None:
    if name != service.model_name:
        raise model_not_found(name, service.model_name)
