"""The web playground: one static page at /playground, served only when ``VLT_PLAYGROUND`` is on.

The page is plain HTML + JavaScript (no build step, nothing fetched from elsewhere) and
talks to the public API only: ``/v1/files`` (upload with progress), ``/v1/chat/completions``
(SSE stream), ``/v1/videos`` (create, poll progress, play ``/content``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter()


def page() -> str:
    return resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8")


@router.get("/playground", include_in_schema=False)
async def playground() -> HTMLResponse:
    # Read per request: a small file, and edits show without a restart.
    return HTMLResponse(page(), headers={"Cache-Control": "no-cache"})


@router.get("/playground/", include_in_schema=False)
async def playground_slash() -> RedirectResponse:
    return RedirectResponse("/playground")
