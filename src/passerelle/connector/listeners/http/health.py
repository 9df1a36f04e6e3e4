"""``/healthz`` (the process answers), ``/readyz`` (ready to take messages, else 503 with the reason)
and ``/metrics`` (Prometheus text format, from the app-owned registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthApi:
    """``readiness()`` returns "" when ready, else the reason (a task died, starting, stopping)."""

    def __init__(self, readiness: Callable[[], str], registry: CollectorRegistry) -> None:
        self.readiness = readiness
        self.registry = registry

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/healthz", self.healthz, methods=["GET"])
        router.add_api_route("/readyz", self.readyz, methods=["GET"])
        router.add_api_route("/metrics", self.metrics, methods=["GET"])
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
