# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the JSON API and the web console both do, written once: name checks, the in-progress
guards (one map/unmap per snapshot, one restore per destination), browsing and downloading a
mapped snapshot, submitting a restore job, holds.

app.py (JSON) and console/ (HTML) are two faces over :class:`Operations`; neither calls the
backend for anything that changes state except through it, so a rule added here holds for both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backurne_api import files
from backurne_api.backend import Backend, Mapped, RestoreRequest
from backurne_api.jobs import JobRunner, Progress

MAX_NAME = 1024
MAX_PATH = 4096
MAX_ENTRIES = 100_000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, image: str | None = None, snapshot: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.image, self.snapshot = status, code, message, image, snapshot


def check_name(kind: str, value: str, image: str | None = None) -> None:
    """Names reach rbd as --image=/--snap= options; refuse what it could never address."""
    if not value or len(value) > MAX_NAME:
        raise ApiError(422, "invalid_input", f"{kind} name must be 1 to {MAX_NAME} characters", image=image)
    if "\0" in value or "/" in value or "@" in value:
        raise ApiError(422, "invalid_input", f"{kind} name {value!r} contains '/', '@' or NUL", image=image or value)


class Busy:
    """One map/unmap per snapshot at a time, one restore per destination at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[tuple[str, ...]] = set()

    def try_take(self, key: tuple[str, ...]) -> bool:
        with self._lock:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def release(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._held.discard(key)

    @contextmanager
    def hold(self, key: tuple[str, ...], what: str, image: str, snapshot: str) -> Iterator[None]:
        if not self.try_take(key):
            raise ApiError(
                409, "conflict", f"{what} of image {image!r} snapshot {snapshot!r} is in progress", image, snapshot
            )
        try:
            yield
        finally:
            self.release(key)


class Operations:
    """The backend behind the guards and checks both faces share."""

    def __init__(self, backend: Backend, runner: JobRunner) -> None:
        self.backend = backend
        self.runner = runner
        self.busy = Busy()

    # -- file access ------------------------------------------------------------------------------

    def map(self, image: str, snapshot: str) -> Mapped:
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        exact = self.backend.resolve_snapshot(image, snapshot)
        with self.busy.hold(("map", image, exact), "a map or unmap", image, exact):
            return self.backend.map(image, exact)

    def unmap(self, image: str, snapshot: str) -> None:
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        with self.busy.hold(("map", image, snapshot), "a map or unmap", image, snapshot):
            self.backend.unmap(image, snapshot)

    def mapped(self, image: str, snapshot: str) -> Mapped:
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        return self.backend.mapped(image, snapshot)

    def filesystem(self, image: str, snapshot: str, path: str) -> tuple[files.SnapshotFiles | None, str, Mapped]:
        """(files of the filesystem the path starts with, rest of the path, the mapping)."""
        mapping = self.mapped(image, snapshot)
        parts = files.split_relative(path)
        if not parts:
            return None, "", mapping
        by_name = {fs.name: fs for fs in mapping.filesystems if fs.mountpoint}
        fs = by_name.get(parts[0])
        if fs is None or fs.mountpoint is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ApiError(
                404,
                "not_found",
                f"image {image!r} snapshot {snapshot!r} has no filesystem {parts[0]!r} (mounted: {known})",
                image,
                snapshot,
            )
        label = f"image {image!r} snapshot {snapshot!r} filesystem {fs.name!r}"
        return files.SnapshotFiles(fs.mountpoint, label), "/".join(parts[1:]), mapping

    def listing(self, image: str, snapshot: str, path: str, limit: int = 10_000) -> dict[str, Any]:
        """A directory of a mapped snapshot ('' lists its filesystems); symlinks never followed out."""
        snapshot_files, rest, mapping = self.filesystem(image, snapshot, path)
        if snapshot_files is None:
            entries = [
                files.Entry(name=fs.name, type="directory", size=0, mode="0555", mtime=0.0)
                for fs in mapping.filesystems
                if fs.mountpoint
            ]
            shown = "/"
        else:
            sub, entries = snapshot_files.list_dir(rest)
            shown = "/" + files.split_relative(path)[0] + (sub if sub != "/" else "")
        return {
            "image": image,
            "snapshot": snapshot,
            "path": shown,
            "entries": [entry.__dict__ for entry in entries[:limit]],
            "truncated": len(entries) > limit,
        }

    def open_file(self, image: str, snapshot: str, path: str) -> tuple[int, int, str]:
        """(fd, size, file name) of a regular file of a mapped snapshot."""
        snapshot_files, rest, _mapping = self.filesystem(image, snapshot, path)
        if snapshot_files is None or not rest:
            raise ApiError(422, "invalid_input", f"path {path!r} names a filesystem, not a file", image, snapshot)
        return snapshot_files.open_file(rest)

    # -- restore ----------------------------------------------------------------------------------

    def start_restore(
        self,
        image: str,
        snapshot: str,
        cluster: str,
        dest_image: str | None,
        force: bool,
        principal: str | None,
    ) -> dict[str, Any]:
        """Check and queue a restore job; its public record."""
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        if dest_image is not None:
            check_name("destination image", dest_image, image)
        exact = self.backend.resolve_snapshot(image, snapshot)
        restore = RestoreRequest(image, exact, cluster, dest_image, force)
        plan = self.backend.check_restore(restore)
        dest_key = ("restore", cluster, str(plan.get("dest_image") or dest_image or image))
        if not self.busy.try_take(dest_key):
            raise ApiError(
                409, "conflict", f"a restore to {dest_key[2]!r} on {cluster!r} is already running", image, exact
            )

        def work(progress: Progress) -> dict[str, Any]:
            try:
                return self.backend.restore(restore, progress)
            finally:
                self.busy.release(dest_key)

        params = {
            "image": image,
            "snapshot": exact,
            "cluster": cluster,
            "dest_image": plan.get("dest_image", dest_image),
            "force": force,
        }
        job = self.runner.submit("restore", params, work, submitted_by=principal)
        return self.runner.get(job.id) or job.public()

    # -- holds --------------------------------------------------------------------------------------

    def holds(self, image: str) -> list[dict[str, Any]]:
        check_name("image", image)
        return self.backend.list_holds(image)

    def hold(self, image: str, snapshot: str, reason: str, until: str | None, by: str) -> dict[str, Any]:
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        exact = self.backend.resolve_snapshot(image, snapshot)
        with self.busy.hold(("hold", image, exact), "a hold or release", image, exact):
            return self.backend.set_hold(image, exact, reason, until, by)

    def release(self, image: str, snapshot: str) -> dict[str, Any]:
        check_name("image", image)
        check_name("snapshot", snapshot, image)
        with self.busy.hold(("hold", image, snapshot), "a hold or release", image, snapshot):
            return self.backend.release_hold(image, snapshot)
