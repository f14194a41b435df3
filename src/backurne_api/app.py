# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The backurne REST API (FastAPI): inspection, file-level access and restores.

``create_app(config)`` builds the application; ``backurne-api`` (main.py) serves it with
uvicorn. Every route — the OpenAPI document included — sits behind :class:`AuthMiddleware`,
which runs before routing: a request without a valid token gets 401 whatever its path, so a
route added later cannot be left open by forgetting a dependency, and an unauthenticated client
cannot even learn which paths exist.

Errors are JSON ``{"error": CODE, "message": TEXT, "image": ..., "snapshot": ...}``: 401 no or
bad token, 403 a path leading out of a snapshot, 404 unknown image/snapshot/job or not mapped,
409 conflict (already mapped, destination exists, operation in progress), 413 a request body over
``api.max_body_bytes``, 422 bad input, 502 a Ceph command failed on a valid request. Bad input never yields a 500.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from backurne_api import __version__, files
from backurne_api.auth import DEFAULT_SCOPE, StoredToken, TokensFileError, TokenStore, bearer_token, may_operate
from backurne_api.backend import Backend, BackendError
from backurne_api.console import is_console_path
from backurne_api.console.pages import install_console
from backurne_api.console.session import ConsoleGate, SessionStore
from backurne_api.guards import AccessLog, BodyLimit
from backurne_api.jobs import FAILED, SUCCEEDED, JobRunner
from backurne_api.operations import MAX_ENTRIES, MAX_NAME, MAX_PATH, ApiError, Operations, check_name

log = logging.getLogger("backurne_api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # as backurne_cli.config's default


# -- authentication ---------------------------------------------------------------------------


class AuthMiddleware:
    """Bearer-token check in front of every route (pure ASGI: downloads stream untouched).

    Console paths (/ and /ui/...) go through the console's gate instead (a session cookie, or
    the login page). A request that changes something (any method but GET/HEAD/OPTIONS) needs a
    token of scope ``operate``: a ``read`` token gets 403, whatever the route.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        tokens: TokenStore | None,
        anonymous: bool,
        console: ConsoleGate | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.anonymous = anonymous
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            return
        if self.console is not None and is_console_path(scope.get("path", "")):
            await self.console(scope, receive, send, self.app)
            return
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        stored = self._principal(header)
        client = scope.get("client") or ("?", 0)
        if stored is None:
            # Never the header itself: it holds the (wrong, or someone's mistyped) token.
            log.warning(
                "refused %s %s from %s: %s",
                scope.get("method"),
                scope.get("path"),
                client[0],
                "no token" if header is None else "invalid token",
            )
            response = JSONResponse(
                {
                    "error": "unauthorized",
                    "message": "a valid bearer token is required (Authorization: Bearer TOKEN)"
                    if header is None
                    else "invalid token",
                    "image": None,
                    "snapshot": None,
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="backurne"'},
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"], state["scope"] = stored.label, stored.scope
        if scope.get("method") not in SAFE_METHODS and not may_operate(stored.scope):
            log.warning(
                "refused %s %s from %s: %s has scope %s",
                scope.get("method"),
                scope.get("path"),
                client[0],
                stored.label,
                stored.scope,
            )
            message = f"the token of {stored.label!r} has scope {stored.scope!r}: this needs scope 'operate'"
            await _error(403, "forbidden", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _principal(self, header: str | None) -> StoredToken | None:
        if header is None:
            return StoredToken(b"", "anonymous", DEFAULT_SCOPE) if self.anonymous else None
        # A token that is sent is checked even when anonymous access is on: a client with a
        # wrong token is misconfigured and should hear it, not be served as anonymous.
        token = bearer_token(header)
        if token is None or self.tokens is None:
            return None
        return self.tokens.identify(token)


# -- response and request models (they make the OpenAPI document) ------------------------------


class ErrorOut(BaseModel):
    error: str
    message: str
    image: str | None = None
    snapshot: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    anonymous: bool
    mapped: int
    jobs_running: int


class ImageOut(BaseModel):
    image: str
    ident: str
    disk: str
    comment: str
    size: int | None
    snapshot_count: int
    newest_snapshot: str | None
    newest_created: str | None


class SnapshotOut(BaseModel):
    name: str
    profile: str
    count: int
    created: str
    size: int | None


class ImageDetailOut(ImageOut):
    snapshots: list[SnapshotOut]
    foreign_snapshots: list[str]


class FilesystemOut(BaseModel):
    name: str
    fstype: str | None
    mountpoint: str | None
    error: str | None = None


class MappedOut(BaseModel):
    image: str
    snapshot: str
    filesystems: list[FilesystemOut]
    details: dict[str, Any]


class UnmapOut(BaseModel):
    image: str
    snapshot: str
    unmapped: bool


class EntryOut(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: str
    mtime: float
    target: str | None = None


class ListingOut(BaseModel):
    image: str
    snapshot: str
    path: str
    entries: list[EntryOut]
    truncated: bool


class RestoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=MAX_NAME, description="backup image IDENT;DISK;COMMENT")
    snapshot: str = Field(
        min_length=1, max_length=MAX_NAME, description="snapshot name, 'latest', or an ISO time (prefix)"
    )
    cluster: str = Field(min_length=1, max_length=MAX_NAME, description="live cluster (config live_clusters)")
    dest_image: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, description="destination image; default derived"
    )
    force: bool = Field(default=False, description="replace an existing destination (the current one is kept)")


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="why the snapshot is kept")
    until: str | None = Field(
        default=None, max_length=64, description="ISO date or time (UTC) the hold ends; null: until released"
    )


class HoldOut(BaseModel):
    snapshot: str
    reason: str
    until: str | None
    by: str
    at: str | None
    active: bool | None = None
    image: str | None = None
    released: bool | None = None


class JobOut(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    state: Literal["queued", "running", "succeeded", "failed"]
    created: str
    started: str | None
    finished: str | None
    result: Any = None
    error: str | None
    submitted_by: str | None
    progress: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no or invalid token"},
    422: {"model": ErrorOut, "description": "bad input"},
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        403: "the path leads outside the snapshot",
        404: "unknown image, snapshot, job, or not mapped",
        409: "conflict",
        502: "a Ceph or system command failed",
    }
    out = dict(ERRORS)
    for code in codes:
        out[code] = {"model": ErrorOut, "description": described[code]}
    return out


def _acts(tag: str) -> dict[str, Any]:
    """Route options of a route that acts on a backup snapshot (map, unmap, hold, release, a
    restore job): the errors of an unknown image, a conflict or a failed command."""
    return {"responses": _responses(404, 409, 502), "tags": [tag]}


def _starts(tag: str, status_code: int) -> dict[str, Any]:
    """Route options of a POST that starts something on the backup cluster (a mapping, a restore
    job): its success status, and the errors of _acts."""
    return {"status_code": status_code, **_acts(tag)}


# -- helpers ------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, image: str | None = None, snapshot: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "image": image, "snapshot": snapshot},
        status_code=status,
    )


def content_disposition(name: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


# -- the application ------------------------------------------------------------------------------


def create_app(
    config: Any,
    *,
    backend: Backend | None = None,
    tokens: TokenStore | None = None,
    jobs: JobRunner | None = None,
) -> FastAPI:
    """The API for ``config`` (a backurne_cli.config.Config).

    ``backend`` defaults to the core library (CoreBackend); ``tokens`` to the configured
    tokens file. Refuses to build an API nobody could use, or one open by accident: without
    ``api.anonymous: true`` a tokens file is required.
    """
    api_settings = config.api
    if tokens is None and api_settings.tokens_file:
        tokens = TokenStore(api_settings.tokens_file)
    if tokens is None and not api_settings.anonymous:
        raise TokensFileError(
            f"{config.source or 'configuration'}: api.tokens_file is not set and api.anonymous is not true: "
            "nobody could use the API (set a tokens file, see docs/rest-api.md)"
        )
    if backend is None:
        from backurne_api.core import CoreBackend  # the core pulls in the collection's code

        backend = CoreBackend(config)
    runner = jobs or JobRunner()
    ops = Operations(backend, runner)

    app = FastAPI(
        title="backurne",
        version=__version__,
        description="Inspection, file-level access and restores of backurne's Ceph RBD backups. "
        "Every endpoint needs `Authorization: Bearer TOKEN` unless the service is configured "
        "with `api.anonymous: true`.",
        docs_url=None,  # Swagger UI would load its assets from a CDN: /openapi.json is the document
        redoc_url=None,
        # Documents the scheme in the OpenAPI document; the check itself is AuthMiddleware's.
        dependencies=[Security(HTTPBearer(auto_error=False, description="a token of the tokens file"))],
    )
    app.state.backend = backend
    app.state.jobs = runner
    app.state.operations = ops
    app.state.tokens = tokens
    app.state.settings = api_settings

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.image, exc.snapshot)

    @app.exception_handler(BackendError)
    async def _backend_error(_request: Request, exc: BackendError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s", exc.message)
        return _error(exc.status, exc.code, exc.message, exc.image, exc.snapshot)

    @app.exception_handler(files.FileAccessError)
    async def _file_error(request: Request, exc: files.FileAccessError) -> JSONResponse:
        status = {
            files.BadPath: 422,
            files.OutsideSnapshot: 403,
            files.NotFound: 404,
            files.WrongType: 422,
        }.get(type(exc), 422)
        code = {403: "outside_snapshot", 404: "not_found"}.get(status, "invalid_input")
        params = request.path_params
        return _error(status, code, str(exc), params.get("image"), params.get("snapshot"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "request"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return _error(422, "invalid_input", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # Starlette's "error parsing the body" (not JSON, not UTF-8): bad input like any other.
            return _error(422, "invalid_input", f"request body: {exc.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405 (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error (see the service log)")

    # -- routes --------------------------------------------------------------------------------

    @app.get("/health", response_model=HealthOut, responses=ERRORS, tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: the service answers and its token check works (no Ceph call)."""
        running = sum(1 for job in runner.list() if job["state"] not in (SUCCEEDED, FAILED))
        return {
            "status": "ok",
            "version": __version__,
            "anonymous": bool(api_settings.anonymous),
            "mapped": len(backend.list_mapped()),
            "jobs_running": running,
        }

    @app.get("/images", response_model=list[ImageOut], responses=_responses(502), tags=["inspection"])
    def list_images() -> list[dict[str, Any]]:
        """The backed-up disks (backup images `IDENT;DISK;COMMENT`) of the backup pool."""
        return backend.list_images()

    @app.get(
        "/images/{image}/snapshots",
        response_model=ImageDetailOut,
        responses=_responses(404, 502),
        tags=["inspection"],
    )
    def image_snapshots(image: str) -> dict[str, Any]:
        """One backup image and its backurne snapshots, oldest first."""
        check_name("image", image)
        return backend.image_snapshots(image)

    @app.post("/images/{image}/snapshots/{snapshot}/map", response_model=MappedOut, **_starts("file access", 201))
    def map_snapshot(image: str, snapshot: str) -> dict[str, Any]:
        """Expose a snapshot's files: clone, map and mount read-only. `snapshot` may be `latest`."""
        return ops.map(image, snapshot).public()

    @app.delete("/images/{image}/snapshots/{snapshot}/map", response_model=UnmapOut, **_acts("file access"))
    def unmap_snapshot(image: str, snapshot: str) -> dict[str, Any]:
        """Unmount, unmap and remove the clone of a mapped snapshot."""
        ops.unmap(image, snapshot)
        return {"image": image, "snapshot": snapshot, "unmapped": True}

    @app.get("/mapped", response_model=list[MappedOut], responses=ERRORS, tags=["file access"])
    def list_mapped() -> list[dict[str, Any]]:
        """The snapshots mapped now (by this service, the CLI or the restore playbook)."""
        return [mapping.public() for mapping in backend.list_mapped()]

    @app.get(
        "/mapped/{image}/{snapshot}",
        response_model=MappedOut,
        responses=_responses(404),
        tags=["file access"],
    )
    def get_mapped(image: str, snapshot: str) -> dict[str, Any]:
        """One mapped snapshot and its filesystems."""
        return ops.mapped(image, snapshot).public()

    @app.get(
        "/mapped/{image}/{snapshot}/files",
        response_model=ListingOut,
        responses=_responses(403, 404),
        tags=["file access"],
    )
    def browse(
        image: str,
        snapshot: str,
        path: str = Query(
            "",
            max_length=MAX_PATH,
            description="relative path: FILESYSTEM/dir/... ('' lists the filesystems); no '..', not absolute",
        ),
        limit: int = Query(10_000, ge=1, le=MAX_ENTRIES, description="at most this many entries"),
    ) -> dict[str, Any]:
        """A directory of a mapped snapshot. Symlinks are listed, never followed out of it."""
        return ops.listing(image, snapshot, path, limit)

    @app.get(
        "/mapped/{image}/{snapshot}/download",
        responses={
            **_responses(403, 404),
            200: {"content": {"application/octet-stream": {}}, "description": "the file's content"},
        },
        response_class=StreamingResponse,
        tags=["file access"],
    )
    def download(
        image: str,
        snapshot: str,
        path: str = Query(..., min_length=1, max_length=MAX_PATH, description="FILESYSTEM/path/to/file"),
    ) -> StreamingResponse:
        """The content of a regular file of a mapped snapshot."""
        fd, size, name = ops.open_file(image, snapshot, path)
        return StreamingResponse(
            files.iter_fd(fd),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size), "Content-Disposition": content_disposition(name)},
        )

    @app.post("/restores", response_model=JobOut, **_starts("restore", 202))
    def start_restore(request: Request, body: RestoreIn) -> dict[str, Any]:
        """Restore a backup snapshot onto a live cluster, as a job: poll GET /jobs/{id}."""
        principal = request.scope.get("state", {}).get("principal")
        return ops.start_restore(body.image, body.snapshot, body.cluster, body.dest_image, body.force, principal)

    @app.get("/images/{image}/holds", response_model=list[HoldOut], responses=_responses(404, 502), tags=["holds"])
    def list_holds(image: str) -> list[dict[str, Any]]:
        """The holds of a backup image: snapshots backup-side retention keeps (past `until`: released)."""
        return ops.holds(image)

    @app.put("/images/{image}/snapshots/{snapshot}/hold", response_model=HoldOut, **_acts("holds"))
    def put_hold(request: Request, image: str, snapshot: str, body: HoldIn) -> dict[str, Any]:
        """Pin a snapshot (`latest` allowed): retention on the backup side keeps it while held."""
        principal = request.scope.get("state", {}).get("principal") or "anonymous"
        return ops.hold(image, snapshot, body.reason, body.until, principal)

    @app.delete("/images/{image}/snapshots/{snapshot}/hold", response_model=HoldOut, **_acts("holds"))
    def delete_hold(image: str, snapshot: str) -> dict[str, Any]:
        """Release a snapshot's hold: the next retention run treats it like any other."""
        return ops.release(image, snapshot)

    @app.get("/jobs", response_model=list[JobOut], responses=ERRORS, tags=["restore"])
    def list_jobs() -> list[dict[str, Any]]:
        """Restore jobs of this service process, oldest first (forgotten at restart)."""
        return runner.list()

    @app.get("/jobs/{job_id}", response_model=JobOut, responses=_responses(404), tags=["restore"])
    def get_job(job_id: str) -> dict[str, Any]:
        """One job: queued, running, succeeded (with its result) or failed (with the error)."""
        job = runner.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} (jobs are forgotten when the service restarts)")
        return job

    # Innermost first: the body limit applies to authenticated requests (others get 401 unread),
    # the access log (outermost) records every request, refused ones included.
    app.add_middleware(BodyLimit, limit=int(getattr(api_settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)))
    sessions = SessionStore(tokens, bool(api_settings.anonymous))
    app.state.sessions = sessions
    install_console(app, ops, sessions, config)
    app.add_middleware(
        AuthMiddleware, tokens=tokens, anonymous=bool(api_settings.anonymous), console=ConsoleGate(sessions)
    )
    app.add_middleware(AccessLog)
    return app
