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


#: The console's message for a form body refused before any route, by status.
BODY_MESSAGES = {413: "error.too_large", 408: "error.body_timeout"}


def body_page(sources: ConsoleSources) -> Callable[[Request, int], Response]:
    """The console's error page for a form body refused by :class:`~..body.BodyCap`: over the cap (413),
    not received in time (408)."""
    base = ConsoleBase(sources)
    return lambda request, status: base.error(request, status, BODY_MESSAGES[status])


__all__ = ["ConsoleRefusal", "ConsoleSources", "SpaceInfo", "body_page", "console_router", "refusal_handler"]
