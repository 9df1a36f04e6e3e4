"""The CDA intake's HTTP route (``POST /v1/documents``) alone, as the composition root mounts it: an
intake over the given ``accept`` with one intake identity (sender ``http``, the intake's default)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from passerelle.config.settings import HttpRole
from passerelle.connector.intake.cda import CdaIntake, CdaIntakeSettings
from passerelle.connector.listeners.http.auth import Authenticator, Identity, TokenBook
from passerelle.connector.listeners.http.documents import DocumentsApi

INTAKE_TOKEN = "intake-token-for-tests"
#: ``Authorization`` header of that identity.
BEARER = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


def intake_auth() -> Authenticator:
    """One intake identity whose sender is the intake's own default (``http``)."""
    return Authenticator(TokenBook([(Identity("lab", HttpRole.INTAKE, "http"), INTAKE_TOKEN)]))


def documents_app(accept: Any, clock: Callable[[], datetime], **settings: object) -> FastAPI:
    """The route over ``CdaIntake(accept, ...)``; ``settings`` are ``CdaIntakeSettings`` values
    (``test_environment`` on unless given)."""
    conf = CdaIntakeSettings.model_validate({"test_environment": True, **settings})
    app = FastAPI()
    intake = CdaIntake(accept, conf, channel="http", sender=conf.sender, clock=clock)
    app.include_router(DocumentsApi(intake, intake_auth()).router())
    return app
