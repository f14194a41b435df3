# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Console sessions and the gate in front of every console path.

Logging in trades a token (from the tokens file) for a session: a random id in a ``Secure;
HttpOnly; SameSite=Strict`` cookie, the session itself kept in this process (never the token,
nor anything derived from it, in the cookie). A session remembers the SHA-256 of its token and
re-reads that token's line on every request: removing a token from the tokens file, or lowering
its scope, ends or narrows its sessions at once. Sessions end after ``IDLE`` without a request,
``MAX_AGE`` after login, at logout, and when the service restarts.

Every state-changing form carries the session's CSRF token (checked with compare_digest), and
every POST must come from this very origin when the browser says where it comes from (Origin).
Every console response carries a Content-Security-Policy without inline script, and refuses to
be framed.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi.responses import HTMLResponse, RedirectResponse

from backurne_api.auth import DEFAULT_SCOPE, StoredToken, TokenStore, may_operate
from backurne_api.console import PREFIX

log = logging.getLogger("backurne_api.console")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "backurne_session"
IDLE = 3600.0
MAX_AGE = 12 * 3600.0
OPEN_PATHS = (f"{PREFIX}/login", f"{PREFIX}/static/")
# POSTs a read-only session may send (they change nothing but the session itself).
READ_POSTS = (f"{PREFIX}/logout",)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer the browser sends "Origin: null" on our own forms.
    (b"referrer-policy", b"same-origin"),
]
ANONYMOUS_DIGEST = b""


@dataclass
class Session:
    id: str
    digest: bytes
    label: str
    scope: str
    csrf: str
    created: float
    seen: float = field(default=0.0)

    @property
    def may_operate(self) -> bool:
        return may_operate(self.scope)


class SessionStore:
    def __init__(self, tokens: TokenStore | None, anonymous: bool) -> None:
        self.tokens = tokens
        self.anonymous = anonymous
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def login(self, token: str) -> Session | None:
        """A new session for a valid token ('' for anonymous access when it is on), else None."""
        if not token:
            stored = StoredToken(ANONYMOUS_DIGEST, "anonymous", DEFAULT_SCOPE) if self.anonymous else None
        else:
            stored = self.tokens.identify(token) if self.tokens is not None else None
        if stored is None:
            return None
        now = time.monotonic()
        session = Session(
            secrets.token_urlsafe(32), stored.digest, stored.label, stored.scope, secrets.token_urlsafe(32), now, now
        )
        with self._lock:
            self._expire(now)
            self._sessions[session.id] = session
        return session

    def lookup(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(session_id)
        if session is None:
            return None
        current = self._current_line(session)
        if current is None:
            self.logout(session.id)  # the token was revoked: so are its sessions
            return None
        session.label, session.scope, session.seen = current.label, current.scope, now
        return session

    def _current_line(self, session: Session) -> StoredToken | None:
        if session.digest == ANONYMOUS_DIGEST:
            return StoredToken(ANONYMOUS_DIGEST, "anonymous", DEFAULT_SCOPE) if self.anonymous else None
        return self.tokens.by_digest(session.digest) if self.tokens is not None else None

    def logout(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if now - s.seen > IDLE or now - s.created > MAX_AGE]:
            del self._sessions[sid]


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


def session_cookie(session_id: str) -> str:
    return f"{COOKIE}={session_id}; Path=/; Secure; HttpOnly; SameSite=Strict"


def cleared_cookie() -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope) -> str | None:
    header = _header(scope, b"cookie") or ""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE:
            return value
    return None


def same_origin(scope: Scope) -> bool:
    """False when the browser says the request comes from another origin (Origin header)."""
    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return origin is None
    host = _header(scope, b"host") or ""
    return urlsplit(origin).netloc == host


def _page(status: int, title: str, message: str) -> HTMLResponse:
    from html import escape

    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<link rel="stylesheet" href="{PREFIX}/static/console.css"></head><body><main>'
        f'<h1>{escape(title)}</h1><p class="error">{escape(message)}</p>'
        f'<p><a href="{PREFIX}/">Overview</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status)


class ConsoleGate:
    """In front of every console path: a session or the login page; scope and origin checks."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        async def secured_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *SECURITY_HEADERS])
            await send(message)

        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if path in ("/", PREFIX):
            await RedirectResponse(f"{PREFIX}/", status_code=303)(scope, receive, secured_send)
            return
        if method == "POST" and not same_origin(scope):
            await _page(403, "Refused", "cross-origin form submission")(scope, receive, secured_send)
            return
        if path.startswith(OPEN_PATHS):
            await app(scope, receive, secured_send)
            return
        session = self.sessions.lookup(_cookie(scope))
        if session is None:
            if method in ("GET", "HEAD"):
                target = f"{PREFIX}/login?next={quote(path, safe='/')}"
                await RedirectResponse(target, status_code=303)(scope, receive, secured_send)
            else:
                await _page(401, "Not logged in", "log in again")(scope, receive, secured_send)
            return
        if method not in ("GET", "HEAD") and path not in READ_POSTS and not session.may_operate:
            client = scope.get("client") or ("?", 0)
            log.warning("refused %s %s from %s: %s has scope %s", method, path, client[0], session.label, session.scope)
            message = f"the token of {session.label!r} is read-only (scope {session.scope}): it may not do this"
            await _page(403, "Not allowed", message)(scope, receive, secured_send)
            return
        state = scope.setdefault("state", {})
        state["principal"], state["scope"], state["session"] = session.label, session.scope, session
        await app(scope, receive, secured_send)
