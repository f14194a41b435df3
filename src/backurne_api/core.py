# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST API's backend over backurne's core library: catalog, mapping, restore.

The same functions the ``backurne`` CLI and the Ansible modules call; this module only turns
their errors into the API's (NotFound, Conflict, InvalidInput, CephFailure), each naming the
image and snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backurne_api.backend import (
    CephFailure,
    Conflict,
    Filesystem,
    InvalidInput,
    Mapped,
    NotFound,
    RestoreRequest,
)
from backurne_api.jobs import JobFailed
from backurne_browse import catalog, mapping
from backurne_cli.config import Config, ConfigError
from backurne_core.ceph.rbd import RbdError, RbdRunner
from backurne_core.policy.naming import parse_backup_image_name
from backurne_core.stream import restore


def _ceph_failure(exc: RbdError, image: str | None = None, snapshot: str | None = None) -> CephFailure:
    return CephFailure(str(exc), image=image, snapshot=snapshot)


class CoreBackend:
    def __init__(self, config: Config, *, timeout: float = 120) -> None:
        self.config = config
        self.timeout = timeout
        self.pool = config.backup.pool
        self.namespace = config.backup.namespace
        self.prefix = config.snap_prefix

    # -- inspection -----------------------------------------------------------------------------

    def _backup(self) -> RbdRunner:
        return self.config.backup_runner(timeout=self.timeout)

    def _where(self) -> str:
        return f"{self.pool}/{self.namespace}" if self.namespace else self.pool

    def list_images(self) -> list[dict[str, Any]]:
        try:
            disks = catalog.list_disks(self._backup(), self.pool, self.namespace, self.prefix)
        except RbdError as exc:
            raise _ceph_failure(exc) from None
        return [disk.to_dict() for disk in disks]

    def _snapshots(self, image: str) -> tuple[list[catalog.SnapshotEntry], list[str]]:
        parsed = parse_backup_image_name(image)
        if parsed is None:
            raise NotFound(
                f"{image!r} is not a backup image name (IDENT;DISK;COMMENT) of pool {self._where()}", image=image
            )
        try:
            return catalog.list_snapshots(self._backup(), self.pool, self.namespace, image, self.prefix)
        except catalog.CatalogError as exc:
            raise NotFound(str(exc), image=image) from None
        except RbdError as exc:
            raise _ceph_failure(exc, image) from None

    def image_snapshots(self, image: str) -> dict[str, Any]:
        snapshots, foreign = self._snapshots(image)
        parsed = parse_backup_image_name(image)
        assert parsed is not None  # checked by _snapshots
        newest = snapshots[-1] if snapshots else None
        return {
            "image": image,
            "ident": parsed.ident,
            "disk": parsed.disk,
            "comment": parsed.comment,
            "size": newest.size if newest else None,
            "snapshot_count": len(snapshots),
            "newest_snapshot": newest.name if newest else None,
            "newest_created": newest.created.isoformat() if newest else None,
            "snapshots": [snap.to_dict() for snap in snapshots],
            "foreign_snapshots": foreign,
        }

    def resolve_snapshot(self, image: str, snapshot: str) -> str:
        snapshots, _foreign = self._snapshots(image)
        try:
            if snapshot.startswith(restore.SELECT_BEFORE):
                return restore.select_snapshot([s.name for s in snapshots], snapshot, self.prefix, image)
            return catalog.resolve_snapshot(snapshots, snapshot, image).name
        except (catalog.CatalogError, restore.RestoreError) as exc:
            raise NotFound(str(exc), image=image, snapshot=snapshot) from None

    # -- restore ----------------------------------------------------------------------------------

    def live_clusters(self) -> list[str]:
        return sorted(self.config.live_clusters)

    def _live(self, request: RestoreRequest) -> Any:
        try:
            return self.config.live_cluster(request.cluster)
        except ConfigError:
            known = ", ".join(self.live_clusters()) or "none configured"
            raise InvalidInput(
                f"restore of image {request.image!r} snapshot {request.snapshot!r}: no live cluster "
                f"{request.cluster!r} (known: {known})",
                image=request.image,
                snapshot=request.snapshot,
            ) from None

    def _restore_args(self, request: RestoreRequest) -> tuple[Any, ...]:
        """The leading arguments restore.plan_restore and restore.restore_snapshot share: both
        runners, the backup image and snapshot, the live target, force."""
        live = self._live(request)
        return (
            self._backup(),
            live.runner(timeout=self.timeout),
            self.pool,
            self.namespace,
            request.image,
            request.snapshot,
            live.pool,
            live.namespace,
            request.dest_image,
            request.force,
        )

    def check_restore(self, request: RestoreRequest) -> dict[str, Any]:
        args = self._restore_args(request)
        try:
            plan = restore.plan_restore(*args, self.prefix)
        except restore.RestoreError as exc:
            message = f"restore of image {request.image!r} snapshot {request.snapshot!r}: {exc}"
            if isinstance(exc, restore.RestoreConflict):
                raise Conflict(message, image=request.image, snapshot=request.snapshot) from None
            if isinstance(exc, restore.RestoreNotFound):
                raise NotFound(message, image=request.image, snapshot=request.snapshot) from None
            raise InvalidInput(message, image=request.image, snapshot=request.snapshot) from None
        except RbdError as exc:
            raise _ceph_failure(exc, request.image, request.snapshot) from None
        out = plan.to_dict()
        out["dest_image"] = plan.target_image
        return out

    def restore(self, request: RestoreRequest, progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        args = self._restore_args(request)

        def on_bytes(count: int) -> None:
            progress({"bytes": count})

        result = restore.restore_snapshot(*args, progress=on_bytes, snap_prefix=self.prefix)
        record = result.to_dict()
        if not result.ok:
            raise JobFailed(
                f"restore of image {request.image!r} snapshot {request.snapshot!r} failed: {result.error}", record
            )
        return record

    # -- file-level access (mapping) ----------------------------------------------------------------

    def _mapper(self) -> mapping.Mapper:
        return mapping.Mapper(self._backup(), self.pool, self.namespace, self.config.state_dir)

    @staticmethod
    def _public(record: mapping.Mapping) -> Mapped:
        details = {
            "id": record.id,
            "clone": record.clone,
            "method": record.method,
            "status": record.status,
            "created": record.created,
            "devices": list(record.loop_devices) or ([record.base_device] if record.base_device else []),
        }
        filesystems = tuple(
            Filesystem(name=fs.name, mountpoint=fs.mountpoint, fstype=fs.fstype, error=fs.error)
            for fs in record.filesystems
        )
        return Mapped(record.image, record.snapshot, filesystems, details)

    def map(self, image: str, snapshot: str) -> Mapped:
        try:
            record = self._mapper().map(image, snapshot)
        except mapping.AlreadyMapped as exc:
            raise Conflict(str(exc), image=image, snapshot=snapshot) from None
        except mapping.MappingError as exc:
            if "no such snapshot" in str(exc) or "not a backup image" in str(exc):
                raise NotFound(str(exc), image=image, snapshot=snapshot) from None
            raise CephFailure(str(exc), image=image, snapshot=snapshot) from None
        except RbdError as exc:
            raise _ceph_failure(exc, image, snapshot) from None
        return self._public(record)

    def unmap(self, image: str, snapshot: str) -> None:
        try:
            undone = self._mapper().unmap(image, snapshot)
        except (mapping.MappingError, RbdError) as exc:
            raise CephFailure(str(exc), image=image, snapshot=snapshot) from None
        if undone is None:
            raise NotFound(f"snapshot {snapshot!r} of {image!r} is not mapped", image=image, snapshot=snapshot)

    def list_mapped(self) -> list[Mapped]:
        try:
            records = self._mapper().list_mapped()
        except mapping.MappingError as exc:
            raise CephFailure(str(exc)) from None
        # The state directory may hold mappings of another pool (another configuration): only
        # this pool's can be addressed by /mapped/{image}/{snapshot}.
        ours = [r for r in records if r.pool == self.pool and (r.namespace or None) == (self.namespace or None)]
        return [self._public(r) for r in ours]

    def mapped(self, image: str, snapshot: str) -> Mapped:
        try:
            record = self._mapper().get(image, snapshot)
        except mapping.MappingError as exc:
            raise CephFailure(str(exc), image=image, snapshot=snapshot) from None
        if record is None or record.status != "mapped":
            state = "is being mapped" if record is not None else "is not mapped"
            raise NotFound(f"snapshot {snapshot!r} of {image!r} {state}", image=image, snapshot=snapshot)
        return self._public(record)
