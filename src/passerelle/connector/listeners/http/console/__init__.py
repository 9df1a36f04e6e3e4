"""The web console, served by the gateway at ``/`` on the HTTP listener (docs/console.md, ADR 0025).

Server-rendered pages (Jinja2 templates, CSS and a little JavaScript shipped in this package: no CDN, no
build step), French by default and English on request, behind a session opened with the same tokens and
roles as the API. :func:`console_router` gives the routes; :func:`refusal_handler` must be registered on
the application (it turns a refused console request into its login redirect or error page).
"""

from collections.abc import Callable

from fastapi import APIRouter, Request, Response

from passerelle.connector.listeners.http.console.actions import ConsoleActions
from passerelle.connector.listeners.http.console.base import (
    ConsoleBase,
    ConsoleRefusal,
    ConsoleSources,
    SpaceInfo,
    refusal_handler,
)


def console_router(sources: ConsoleSources) -> APIRouter:
    return ConsoleActions(sources).router()


def too_large_page(sources: ConsoleSources) -> Callable[[Request], Response]:
    """The console's error page for a form body over the cap (413), for :class:`~..body.BodyCap`."""
    base = ConsoleBase(sources)
    return lambda request: base.too_large(request)


__all__ = ["ConsoleRefusal", "ConsoleSources", "SpaceInfo", "console_router", "refusal_handler", "too_large_page"]
