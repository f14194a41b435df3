# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the REST API needs from backurne's core, as one small interface.

:class:`CoreBackend` implements it over the core library (catalog, mapping, restore: the very
code the CLI and the Ansible modules run). The web layer (app.py) only sees this interface and
the errors below, so it can be exercised with a stand-in backend in tests that need no Ceph
(authentication, path checks, the schemathesis run), while the lab tests use CoreBackend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class BackendError(Exception):
    """An error the client caused or must know about; ``message`` names the image/snapshot.

    Each kind states its HTTP status and error code in its class line:
    ``class NotFound(BackendError, status=404, code="not_found")``.
    """

    status = 500
    code = "error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A kind that states neither keeps its parent's (a subclass of NotFound is a 404).
        cls.status = cls.status if status is None else status
        cls.code = cls.code if code is None else code

    def __init__(self, message: str, *, image: str | None = None, snapshot: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.image = image
        self.snapshot = snapshot


class NotFound(BackendError, status=404, code="not_found"):
    """No such image, snapshot, job or mapping."""


class Conflict(BackendError, status=409, code="conflict"):
    """The request collides with the state (a busy mapping, a restore onto an existing image)."""


class InvalidInput(BackendError, status=422, code="invalid_input"):
    """The request itself is wrong (a name, a path, an unknown live cluster)."""


class CephFailure(BackendError, status=502, code="backend_failure"):
    """A Ceph or system command failed on a valid request (cluster down, mount refused, ...)."""


@dataclass(frozen=True)
class Filesystem:
    """One mounted filesystem of a mapped snapshot (a partition, or the whole disk)."""

    name: str  # how the API names it: the first component of a browse path
    mountpoint: str | None  # None: not mounted (see error)
    fstype: str | None = None
    error: str | None = None  # why it is not mounted (unknown type, no filesystem, ...)


@dataclass(frozen=True)
class Mapped:
    image: str
    snapshot: str
    filesystems: tuple[Filesystem, ...]
    details: Mapping[str, Any]  # clone name, devices, ...: shown to the client as they are

    def public(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "snapshot": self.snapshot,
            "filesystems": [
                {"name": f.name, "fstype": f.fstype, "mountpoint": f.mountpoint, "error": f.error}
                for f in self.filesystems
            ],
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class RestoreRequest:
    image: str
    snapshot: str
    cluster: str
    dest_image: str | None
    force: bool


class Backend(Protocol):
    def list_images(self) -> list[dict[str, Any]]:
        """Every backup image (``IDENT;DISK;COMMENT``), without its snapshot list."""

    def image_snapshots(self, image: str) -> dict[str, Any]:
        """One backup image with its snapshots; NotFound if it is not a backup image."""

    def resolve_snapshot(self, image: str, snapshot: str) -> str:
        """The exact name of ``snapshot`` (a name, ``latest`` or an ISO time) of ``image``."""

    def map(self, image: str, snapshot: str) -> Mapped:
        """Map and mount a snapshot read-only; Conflict if it already is."""

    def unmap(self, image: str, snapshot: str) -> None:
        """Undo map: mounts, devices and the clone; NotFound if it is not mapped."""

    def list_mapped(self) -> list[Mapped]: ...

    def mapped(self, image: str, snapshot: str) -> Mapped:
        """The mapping of one snapshot; NotFound if it is not mapped."""

    def check_restore(self, request: RestoreRequest) -> dict[str, Any]:
        """Validate a restore before it is queued (NotFound/Conflict/InvalidInput); the plan."""

    def restore(self, request: RestoreRequest, progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Run a restore (in a job thread); its result record. JobFailed when it failed."""

    def live_clusters(self) -> list[str]: ...

    def list_holds(self, image: str) -> list[dict[str, Any]]:
        """The holds of one backup image (policy/holds.py), oldest snapshot first."""

    def set_hold(self, image: str, snapshot: str, reason: str, until: str | None, by: str) -> dict[str, Any]:
        """Pin a snapshot (InvalidInput names a bad reason/until); the hold set."""

    def release_hold(self, image: str, snapshot: str) -> dict[str, Any]:
        """Release the hold of a snapshot; NotFound when it has none."""

    def overview(self) -> dict[str, Any]:
        """Every backup image with its freshness against the profiles and its last run outcome."""

    def health(self) -> dict[str, Any]:
        """The check's findings (report/health.py) over every configured live cluster."""
