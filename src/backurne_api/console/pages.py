# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The console's pages: overview, one disk, browse, mappings, restore jobs, holds, health.

Every page reads through the same backend and every form acts through the same Operations as
the JSON API (operations.py): the console adds HTML, never a rule of its own. Forms are plain
POSTs (work without JavaScript) carrying the session's CSRF token; a read-only session gets
no action forms, and the gate (session.py) refuses the POST should one be sent anyway.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from backurne_api import __version__, files
from backurne_api.backend import BackendError
from backurne_api.console import PREFIX
from backurne_api.console.session import (
    Session,
    SessionStore,
    cleared_cookie,
    csrf_ok,
    session_cookie,
)
from backurne_api.jobs import FAILED, SUCCEEDED
from backurne_api.operations import MAX_PATH, ApiError, Operations
from backurne_cli.main import human_size

log = logging.getLogger("backurne_api.console")
HERE = Path(__file__).resolve().parent
MAX_FORM = 64 * 1024

_env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
_env.filters["q"] = lambda value: urllib.parse.quote(str(value), safe="")


_env.filters["size"] = human_size  # the CLI's
_env.filters["mtime"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else ""


def _render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    session: Session | None = request.scope.get("state", {}).get("session")
    html = _env.get_template(template).render(
        prefix=PREFIX,
        session=session,
        operate=bool(session and session.may_operate),
        csrf=session.csrf if session else "",
        version=__version__,
        **values,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _errors_as_pages(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """The JSON API's errors (bad input, not found, conflict, Ceph failure) as an error page."""

    @functools.wraps(handler)
    async def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(request, *args, **kwargs)
        except (ApiError, BackendError) as exc:
            if exc.status >= 500:
                log.error("%s", exc.message)
            return _render(request, "error.html", exc.status, title="Error", message=exc.message)
        except files.FileAccessError as exc:
            status = 403 if isinstance(exc, files.OutsideSnapshot) else 404 if isinstance(exc, files.NotFound) else 422
            return _render(request, "error.html", status, title="Error", message=str(exc))

    return wrapped


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body of a console form, its CSRF token checked (403 otherwise)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise ApiError(413, "too_large", "form too large")
    fields = {
        k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()
    }
    session: Session | None = request.scope.get("state", {}).get("session")
    if session is None or not csrf_ok(session, fields.get("csrf")):
        raise ApiError(403, "forbidden", "the form is stale or forged (CSRF token): reload the page and try again")
    return fields


def _field(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise ApiError(422, "invalid_input", f"field {name!r} is required")
    return value


async def _target(request: Request) -> tuple[dict[str, str], str, str]:
    """(checked form, image, snapshot) of an action on one snapshot."""
    fields = await _form(request)
    return fields, _field(fields, "image"), _field(fields, "snapshot")


def _back(fields: dict[str, str], allowed: str, image: str) -> RedirectResponse:
    """Back to the list the form was on (only that one: never an open redirect), else the image."""
    return _see(allowed if fields.get("back") == allowed else _image_url(image))


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _image_url(image: str) -> str:
    return f"{PREFIX}/images/{urllib.parse.quote(image, safe='')}"


def _browse_url(image: str, snapshot: str, path: str = "") -> str:
    base = f"{PREFIX}/browse/{urllib.parse.quote(image, safe='')}/{urllib.parse.quote(snapshot, safe='')}"
    return base + (f"?path={urllib.parse.quote(path, safe='/')}" if path else "")


def _group(images: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Images by IDENT (the live cluster of a plain image, the guest's uuid or storage for Proxmox)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        groups.setdefault(image["ident"], []).append(image)
    return sorted(groups.items())


def _matches(image: dict[str, Any], query: str, freshness: str) -> bool:
    if freshness and image.get("freshness") != freshness:
        return False
    return not query or query.lower() in image["image"].lower()


def install_console(app: FastAPI, ops: Operations, sessions: SessionStore, config: Any) -> None:
    backend = ops.backend
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    def page(path: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[Any], Any]:
        def register(handler: Callable[..., Awaitable[Response]]) -> Any:
            wrapped = _errors_as_pages(handler)
            app.add_api_route(
                PREFIX + path, wrapped, methods=list(methods), include_in_schema=False, response_class=HTMLResponse
            )
            return wrapped

        return register

    # -- login ----------------------------------------------------------------------------------

    @page("/login")
    async def login_form(request: Request) -> Response:
        return _render(request, "login.html", next=request.query_params.get("next", ""), anonymous=sessions.anonymous)

    @page("/login", ("POST",))
    async def login(request: Request) -> Response:
        body = (await request.body())[:MAX_FORM].decode("utf-8", "replace")
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
        token = fields.get("token", "").strip()
        session = sessions.login(token) if len(token) <= 512 else None
        if session is None:
            client = request.client.host if request.client else "?"
            log.warning("console login refused from %s: %s", client, "invalid token" if token else "no token")
            return _render(request, "login.html", 401, error="invalid token", next="", anonymous=sessions.anonymous)
        log.info("console login of %s (scope %s)", session.label, session.scope)
        target = fields.get("next", "")
        if not target.startswith(PREFIX + "/") or target.startswith("//"):
            target = f"{PREFIX}/"  # never an open redirect
        response = _see(target)
        response.headers["Set-Cookie"] = session_cookie(session.id)
        return response

    @page("/logout", ("POST",))
    async def logout(request: Request) -> Response:
        await _form(request)
        session: Session = request.scope["state"]["session"]
        sessions.logout(session.id)
        log.info("console logout of %s", session.label)
        response = _see(f"{PREFIX}/login")
        response.headers["Set-Cookie"] = cleared_cookie()
        return response

    # -- reading ----------------------------------------------------------------------------------

    @page("/")
    async def overview(request: Request) -> Response:
        data = backend.overview()
        query = request.query_params.get("q", "")[:200]
        freshness = request.query_params.get("freshness", "")
        shown = [image for image in data["images"] if _matches(image, query, freshness)]
        return _render(
            request,
            "overview.html",
            groups=_group(shown),
            total=len(data["images"]),
            shown=len(shown),
            q=query,
            freshness=freshness,
            now=data["now"],
            profiles=config.profiles,
        )

    @page("/images/{image}")
    async def image_page(request: Request, image: str) -> Response:
        detail = backend.image_snapshots(image)
        holds = {hold["snapshot"]: hold for hold in ops.holds(image)}
        live = backend.live_snapshots(image) if hasattr(backend, "live_snapshots") else None
        mapped = {m.snapshot for m in backend.list_mapped() if m.image == image}
        return _render(
            request,
            "image.html",
            d=detail,
            snapshots=list(reversed(detail["snapshots"])),  # newest first on the page
            holds=holds,
            live=set(live) if live is not None else None,
            mapped=mapped,
            clusters=backend.live_clusters(),
            image_url=_image_url(image),
            browse_url=_browse_url,
        )

    @page("/browse/{image}/{snapshot}")
    async def browse(request: Request, image: str, snapshot: str) -> Response:
        path = request.query_params.get("path", "")[:MAX_PATH]
        mapped = {(m.image, m.snapshot): m for m in backend.list_mapped()}
        if (image, snapshot) not in mapped:
            return _render(
                request, "browse.html", image=image, snapshot=snapshot, listing=None, image_url=_image_url(image)
            )
        listing = ops.listing(image, snapshot, path)
        parts = files.split_relative(path)
        crumbs = [("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)]
        base = "/".join(parts)
        for entry in listing["entries"]:
            entry["path"] = f"{base}/{entry['name']}" if base else entry["name"]
        return _render(
            request,
            "browse.html",
            image=image,
            snapshot=snapshot,
            listing=listing,
            crumbs=crumbs,
            path=base,
            image_url=_image_url(image),
            browse_url=_browse_url,
            mapping=mapped[(image, snapshot)],
        )

    @page("/download/{image}/{snapshot}")
    async def download(request: Request, image: str, snapshot: str) -> Response:
        path = request.query_params.get("path", "")[:MAX_PATH]
        fd, size, name = ops.open_file(image, snapshot, path)
        from backurne_api.app import content_disposition  # one definition, the JSON API's

        return StreamingResponse(
            files.iter_fd(fd),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size), "Content-Disposition": content_disposition(name)},
        )

    @page("/mapped")
    async def mapped_page(request: Request) -> Response:
        now = datetime.now(UTC)
        rows = []
        for mapping in backend.list_mapped():
            created = mapping.details.get("created")
            try:
                age = now - datetime.fromisoformat(str(created)).astimezone(UTC) if created else None
            except ValueError:
                age = None
            rows.append({"m": mapping, "age": _age(age)})
        return _render(request, "mapped.html", rows=rows, browse_url=_browse_url)

    @page("/jobs")
    async def jobs_page(request: Request) -> Response:
        return _render(request, "jobs.html", jobs=list(reversed(ops.runner.list())))

    @page("/jobs/{job_id}")
    async def job_page(request: Request, job_id: str) -> Response:
        job = ops.runner.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} (jobs are forgotten when the service restarts)")
        done = job["state"] in (SUCCEEDED, FAILED)
        return _render(request, "job.html", job=job, done=done, image_url=_image_url(job["params"]["image"]))

    @page("/holds")
    async def holds_page(request: Request) -> Response:
        rows = []
        for image in backend.list_images():
            for hold in ops.holds(image["image"]):
                rows.append({"image": image["image"], **hold})
        return _render(request, "holds.html", rows=rows, image_url=_image_url)

    @page("/health")
    async def health_page(request: Request) -> Response:
        return _render(request, "health.html", h=backend.health(), profiles=config.profiles)

    # -- actions (scope operate: the gate refuses them to a read-only session) ------------------------

    @page("/map", ("POST",))
    async def map_action(request: Request) -> Response:
        _fields, image, snapshot = await _target(request)
        mapped = ops.map(image, snapshot)
        return _see(_browse_url(image, mapped.snapshot))

    @page("/unmap", ("POST",))
    async def unmap_action(request: Request) -> Response:
        fields, image, snapshot = await _target(request)
        ops.unmap(image, snapshot)
        return _back(fields, f"{PREFIX}/mapped", image)

    @page("/restore", ("POST",))
    async def restore_action(request: Request) -> Response:
        fields, image, snapshot = await _target(request)
        force = fields.get("force") == "on"
        dest = fields.get("dest_image") or None
        if force and (not dest or fields.get("confirm", "") != dest):
            raise ApiError(
                422,
                "invalid_input",
                "replacing an existing image needs its name typed again in the confirmation field",
                image,
                snapshot,
            )
        principal = request.scope["state"]["principal"]
        job = ops.start_restore(image, snapshot, _field(fields, "cluster"), dest, force, principal)
        return _see(f"{PREFIX}/jobs/{job['id']}")

    @page("/hold", ("POST",))
    async def hold_action(request: Request) -> Response:
        fields, image, snapshot = await _target(request)
        by = request.scope["state"]["principal"]
        ops.hold(image, snapshot, fields.get("reason", ""), fields.get("until") or None, by)
        return _see(_image_url(image))

    @page("/release", ("POST",))
    async def release_action(request: Request) -> Response:
        fields, image, snapshot = await _target(request)
        ops.release(image, snapshot)
        return _back(fields, f"{PREFIX}/holds", image)


def _age(delta: Any) -> str:
    from backurne_core.report.health import format_age

    return format_age(delta) if delta is not None else "?"
