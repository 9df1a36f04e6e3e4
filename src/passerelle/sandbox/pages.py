"""HTML pages: the patient list and one patient's space as each kind of reader sees it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from passerelle.sandbox.admin import require_admin
from passerelle.sandbox.runtime import runtime_of
from passerelle.sandbox.space import Actor, visible_to

router = APIRouter(dependencies=[Depends(require_admin)])

_env: Environment | None = None


def templates() -> Environment:
    global _env
    if _env is None:
        _env = Environment(
            loader=PackageLoader("passerelle.sandbox", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
    return _env


@router.get("/", response_class=HTMLResponse)
def patient_list(request: Request) -> HTMLResponse:
    store = runtime_of(request).store
    rows = [(p, store.document_counts(p.ins)) for p in store.list_patients()]
    return HTMLResponse(templates().get_template("index.html").render(patients=rows))


@router.get("/patients/{ins}", response_class=HTMLResponse)
def patient_page(request: Request, ins: str) -> HTMLResponse:
    store = runtime_of(request).store
    state = store.get_patient(ins)
    if state is None:
        html = templates().get_template("unknown.html").render(ins=ins)
        return HTMLResponse(html, status_code=404)
    docs = store.documents_of(ins)
    views = {
        "patient": [d for d in docs if visible_to(d, Actor("patient"), state)],
        "professional": [d for d in docs if visible_to(d, Actor("professional"), state)],
        "representative": [d for d in docs if visible_to(d, Actor("representative"), state)],
    }
    store.record_trace(ins, "sandbox-page", "page view", None, "patient page")
    html = (
        templates()
        .get_template("patient.html")
        .render(patient=state, documents=docs, views=views, traces=store.traces(ins), pushes=store.pushes(ins))
    )
    return HTMLResponse(html)
