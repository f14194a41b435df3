# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two pure-ASGI guards around the API: an access log that never writes a query string, and a
request body size limit.

- uvicorn's own access log writes the request target verbatim, query string included
  (``GET /images?token=… 401``): a client that puts its token there by mistake would have it
  kept in the service log. ``backurne-api`` turns that log off and :class:`AccessLog` writes one
  line per request with the path only (and the token's label, never the token).
- Without a limit, a client could make the service hold any body in memory (a 600 MB JSON body
  took it from 52 MB to 2 GB RSS). :class:`BodyLimit` answers 413 from ``Content-Length`` before
  reading anything, and counts the bytes of a body sent without it (chunked) as they arrive,
  answering 413 as soon as the limit is passed: the body is never held whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("backurne_api.access")


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": "too_large",
            "message": f"request body larger than {limit} bytes (api.max_body_bytes)",
            "image": None,
            "snapshot": None,
        },
        status_code=413,
        # The rest of the body is not read: the connection cannot be reused.
        headers={"Connection": "close"},
    )


class BodyLimit:
    """413 for a request body over ``limit`` bytes, decided before it is read whole."""

    def __init__(self, app: App, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self._content_length(scope)
        if declared is not None and declared > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        state = {"received": 0, "refused": False, "started": False}

        async def limited_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["refused"] = True
                    if not state["started"]:
                        await _too_large(self.limit)(scope, receive, send)
                        state["started"] = True
                    # The application sees the client gone: it stops reading and its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None  # the server refuses a malformed length itself
        return None


class AccessLog:
    """One log line per request: method, path (never the query string), status, principal, time."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = {"code": 0}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            client = scope.get("client") or ("?", 0)
            principal = (scope.get("state") or {}).get("principal") or "-"
            access_log.info(
                '%s "%s %s" %s %s %.0f ms',
                client[0],
                scope.get("method"),
                scope.get("path"),  # the decoded path only: scope["query_string"] is never logged
                status["code"] or "-",
                principal,
                1000 * (time.monotonic() - started),
            )


class DropQueryString(logging.Filter):
    """For uvicorn's access logger, should it be turned on (--log-config): cut the query string
    off the request target it logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True
