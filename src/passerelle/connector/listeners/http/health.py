"""``/healthz`` (the process answers), ``/readyz`` (ready to take messages, else 503 with the reason)
and ``/metrics`` (Prometheus text format, from the app-owned registry): the routes open without a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from passerelle.connector.listeners.http.auth import Authenticator


class HealthApi:
    """``readiness()`` returns "" when ready, else the reason (a task died, starting, stopping).

    ``/healthz`` and ``/readyz`` are open to anyone who reaches the port (orchestrators probe them);
    ``/metrics`` too, unless ``metrics_auth`` is given: then it needs a ``read`` identity."""

    def __init__(
        self, readiness: Callable[[], str], registry: CollectorRegistry, metrics_auth: Authenticator | None = None
    ) -> None:
        self.readiness = readiness
        self.registry = registry
        self.metrics_auth = metrics_auth

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/healthz", self.healthz, methods=["GET"])
        router.add_api_route("/readyz", self.readyz, methods=["GET"])
        read = [Depends(self.metrics_auth.read)] if self.metrics_auth is not None else []
        router.add_api_route("/metrics", self.metrics, methods=["GET"], dependencies=read)
        return router

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(self, response: Response) -> dict[str, Any]:
        reason = self.readiness()
        if reason:
            response.status_code = 503
            return {"status": "not ready", "reason": reason}
        return {"status": "ready"}

    async def metrics(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
