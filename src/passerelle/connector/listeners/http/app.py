"""The FastAPI application factory: routers in, one app out (no lifespan: see :mod:`.server`).

API documentation (``/docs``, ``/redoc``, ``/openapi.json``) is off unless ``api_docs`` is true; then the
pages load Swagger UI and ReDoc from copies shipped in the package (``docs_assets/``, licences and
versions in its README), served under ``/docs-assets/``: nothing is fetched from a CDN or any other host.

Request bodies are capped (:mod:`.body`): 64 KiB for the JSON API and the console's forms, read before
any authentication; ``POST /v1/documents`` reads its own under ``cda.max_bytes``.

Request validation errors answer an RFC 7807 problem naming the fields and what is wrong with them,
never the values received (a query or body may carry patient identifiers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response

from passerelle.connector.listeners.http.body import API_MAX_BYTES, BODY_TIMEOUT_S, BodyCap, OwnBody

#: Where the vendored documentation assets are served.
ASSETS = "/docs-assets"
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon-32x32.png")

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def build_app(
    routers: Iterable[APIRouter],
    exception_handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
    *,
    api_docs: bool = False,
    docs_dependencies: Sequence[Depends] = (),
    own_bodies: Mapping[str, OwnBody] | None = None,
    body_page: Callable[[Request, int], Response] | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    count_body: Callable[[str, str], None] | None = None,
) -> FastAPI:
    """The HTTP application. With ``api_docs``, ``/docs``, ``/redoc`` and ``/openapi.json`` are served
    behind ``docs_dependencies`` (the ``read`` role), their assets from the package (no CDN).

    Every request body is read under :data:`~.body.API_MAX_BYTES` before any route or authentication
    (:class:`~.body.BodyCap`), but those of the paths in ``own_bodies`` (``/v1/documents``: its own cap,
    its declared length checked before authentication too), within ``body_timeout_s``; over the cap
    ``/v1/...`` answers a 413 problem and the other paths ``body_page``, past the deadline a 408 the same
    way, each counted by ``count_body(surface, reason)``."""
    app = FastAPI(title="Passerelle", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        BodyCap, max_bytes=API_MAX_BYTES, own=own_bodies, page=body_page, timeout_s=body_timeout_s, count=count_body
    )
    app.add_exception_handler(RequestValidationError, _validation_problem)
    for router in routers:
        app.include_router(router)
    for exc_class, handler in (exception_handlers or {}).items():
        app.add_exception_handler(exc_class, handler)
    if api_docs:
        app.include_router(_docs_router(app), dependencies=list(docs_dependencies))
    return app


async def _validation_problem(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    fields = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type", "")}
              for e in errors]  # fmt: skip
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Unprocessable request",
        "status": 422,
        "detail": "the request does not match the API (see errors)",
        "reason": "validation",
        "errors": fields,
    }
    return JSONResponse(body, status_code=422, media_type="application/problem+json")


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    favicon = f"{ASSETS}/favicon-32x32.png"

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Passerelle API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None},  # its default is a validation service on the Internet
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="Passerelle API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )

    async def asset(name: str) -> Response:
        if name not in _FILES:
            return Response(status_code=404)
        data = files("passerelle.connector.listeners.http").joinpath("docs_assets", name).read_bytes()
        media = _MEDIA[name[name.rfind(".") :]]
        return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400"})

    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    router.add_api_route("/openapi.json", openapi, methods=["GET"])
    router.add_api_route("/docs", swagger, methods=["GET"])
    router.add_api_route("/redoc", redoc, methods=["GET"])
    router.add_api_route(f"{ASSETS}/{{name}}", asset, methods=["GET"])
    return router
