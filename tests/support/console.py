"""Logging in to the console with httpx, as a browser would: the login form, its CSRF token, the cookie."""

from __future__ import annotations

import re

import httpx

from tests.support.gateway import TOKENS

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, role: str) -> httpx.Response:
    """Log ``client`` in with the test token of ``role``; returns the answer to the login POST."""
    page = await client.get("/login")
    token = TOKENS[role][1]
    return await client.post("/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/"})
