"""Console sessions: a browser cannot send a bearer header when it follows a link, so the operator pastes
a token once on the login page and gets a server-side session (ADR 0025).

* The cookie holds only a random session id (256 bits); the session (the identity, its times) stays in
  this process. Sessions end after ``idle_s`` without a request, after ``max_s`` in any case, at logout,
  and at restart: the secret behind the CSRF tokens is generated at start and never stored.
* Every POST form carries a CSRF token, an HMAC of the session id under that secret (nothing to store),
  checked in constant time; the login form's token is bound the same way to a pre-login cookie.
* The cookies are ``HttpOnly``, ``SameSite=Strict``, ``Path=/`` and ``Secure`` when the console is
  served over TLS.
* At most ``limit`` sessions live at once; opening one more closes the least recently used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from passerelle.connector.listeners.http.auth import Identity

SESSION_COOKIE = "passerelle_session"
LOGIN_COOKIE = "passerelle_login"


@dataclass
class Session:
    id: str
    identity: Identity
    opened: float
    seen: float


class SessionStore:
    """The live console sessions of this process. ``clock`` is monotonic seconds."""

    def __init__(
        self, idle_s: float, max_s: float, *, limit: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.limit = limit
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, identity: Identity) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), identity, now, now)
        self._sessions[session.id] = session
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> tuple[Session | None, bool]:
        """The live session for ``session_id`` (its idle time restarts) and whether it just expired."""
        if not session_id:
            return None, False
        session = self._sessions.get(session_id)
        if session is None:
            return None, False
        now = self.clock()
        if now - session.seen > self.idle_s or now - session.opened > self.max_s:
            del self._sessions[session_id]
            return None, True
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session, False

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def csrf(self, bound_to: str) -> str:
        """The CSRF token of a session id (or of a pre-login nonce)."""
        return hmac.new(self._secret, b"csrf:" + bound_to.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, bound_to: str | None, given: str | None) -> bool:
        if not bound_to or not given:
            return False
        return hmac.compare_digest(self.csrf(bound_to), given)
