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
from datetime import UTC, datetime
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
from backurne_core.ceph.holds import pin, read_holds, remove_hold
from backurne_core.ceph.rbd import ImageSpec, RbdError, RbdRunner
from backurne_core.policy.holds import (
    HOLD_KEY_PREFIX,
    HoldError,
    held_now,
    holds_from_metadata,
)
from backurne_core.policy.naming import parse_backup_image_name
from backurne_core.report import health as health_rules
from backurne_core.report.history import History
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

    def _restore_args(self, request: RestoreRequest) -> tuple[RbdRunner, RbdRunner, restore.RestoreRequest]:
        """The leading arguments restore.plan_restore and restore.restore_snapshot share: both
        runners and the core's request (the backup image and snapshot, the live target, force)."""
        live = self._live(request)
        target = restore.RestoreRequest(
            self.pool,
            self.namespace,
            request.image,
            request.snapshot,
            live.pool,
            live.namespace,
            request.dest_image,
            request.force,
        )
        return self._backup(), live.runner(timeout=self.timeout), target

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

    # -- holds ----------------------------------------------------------------------------------------

    def _spec(self, image: str) -> ImageSpec:
        return ImageSpec(self.pool, self.namespace, image)

    def list_holds(self, image: str) -> list[dict[str, Any]]:
        snapshots, foreign = self._snapshots(image)  # NotFound for an unknown image
        try:
            holds = read_holds(self._backup(), self._spec(image))
        except RbdError as exc:
            raise _ceph_failure(exc, image) from None
        order = [s.name for s in snapshots] + foreign
        now = _now()
        listed = [holds[name].to_dict(now) for name in order if name in holds]
        # A hold whose snapshot is gone (released by nobody) is still shown, last.
        listed += [hold.to_dict(now) for name, hold in holds.items() if name not in order]
        return listed

    def set_hold(self, image: str, snapshot: str, reason: str, until: str | None, by: str) -> dict[str, Any]:
        snapshots, _foreign = self._snapshots(image)
        if snapshot not in {s.name for s in snapshots}:
            raise NotFound(f"no backurne snapshot {snapshot!r} of {image!r}", image=image, snapshot=snapshot)
        now = _now()
        try:
            hold = pin(self._backup(), self._spec(image), snapshot, reason, until, by, now)
        except HoldError as exc:
            raise InvalidInput(
                f"hold of {image!r} snapshot {snapshot!r}: {exc}", image=image, snapshot=snapshot
            ) from None
        except RbdError as exc:
            raise _ceph_failure(exc, image, snapshot) from None
        return {"image": image, **hold.to_dict(now)}

    def release_hold(self, image: str, snapshot: str) -> dict[str, Any]:
        self._snapshots(image)
        try:
            released = remove_hold(self._backup(), self._spec(image), snapshot)
        except RbdError as exc:
            raise _ceph_failure(exc, image, snapshot) from None
        if released is None:
            raise NotFound(f"snapshot {snapshot!r} of {image!r} has no hold", image=image, snapshot=snapshot)
        return {"image": image, **released.to_dict(), "released": True}

    # -- overview and health ------------------------------------------------------------------------

    def _transfer_states(self, images: list[str]) -> dict[str, Any]:
        try:
            with History(self.config.state_dir) as history:
                return history.transfer_states(images)
        except Exception:  # pylint: disable=broad-exception-caught
            return {}  # no history (yet, or not readable): the overview shows no last run

    def overview(self) -> dict[str, Any]:
        disks = self.list_images()
        now = _now()
        profiles = self.config.profiles
        states = self._transfer_states([d["image"] for d in disks])
        shortest = min(p.interval for p in profiles.values())
        for disk in disks:
            created = disk["newest_created"]
            age = now - datetime.fromisoformat(created) if created else None
            if age is None:
                disk["freshness"] = "missing"
            else:
                disk["freshness"] = "fresh" if age <= shortest * 1.25 else "late"
            disk["age"] = health_rules.format_age(age) if age is not None else None
            state = states.get(disk["image"])
            disk["last_run"] = _last_run(state)
        return {"now": now.isoformat(timespec="seconds"), "images": disks}

    def live_snapshots(self, image: str) -> list[str] | None:
        """Our snapshots of the live image a plain backup image comes from; None when unknown
        (a Proxmox guest's disk, a live cluster not configured, the live node unreachable)."""
        parsed = parse_backup_image_name(image)
        live = self.config.live_clusters.get(parsed.ident) if parsed else None
        if parsed is None or live is None:
            return None
        try:
            entries = catalog.list_snapshots(
                live.runner(timeout=self.timeout), live.pool, live.namespace, parsed.disk, self.prefix
            )[0]
        except (catalog.CatalogError, RbdError, ValueError):
            return None
        return [entry.name for entry in entries]

    def health(self) -> dict[str, Any]:
        now = _now()
        try:
            backup, metas = self._backup().list_images_with_meta(self.pool, self.namespace, HOLD_KEY_PREFIX)
        except RbdError as exc:
            raise _ceph_failure(exc) from None
        held = {image: held_now(holds_from_metadata(meta), now) for image, meta in metas.items()}
        states = self._transfer_states(list(backup))
        findings: list[dict[str, Any]] = []
        errors: list[str] = []
        checked = 0
        for name, live in sorted(self.config.live_clusters.items()):
            try:
                listing = live.runner(timeout=self.timeout).list_images(live.pool, live.namespace)
            except RbdError as exc:
                errors.append(f"live cluster {name}: {exc}")
                continue
            checked += len(listing)
            found = health_rules.check_images(
                listing, {}, backup, name, self.config.profiles, self.prefix, now, transfers=states, held=held
            )
            findings += [f.to_dict() for f in found]
        status = health_rules.UNKNOWN if errors else health_rules.status_of(health_rules.Finding(**f) for f in findings)
        return {
            "status": health_rules.STATUS_NAMES[status],
            "checked": checked,
            "findings": findings,
            "errors": errors,
            "now": now.isoformat(timespec="seconds"),
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _last_run(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "ok": not state.failing,
        "last_success": state.last_success.isoformat(timespec="seconds") if state.last_success else None,
        "last_failure": state.last_failure.isoformat(timespec="seconds") if state.last_failure else None,
        "failures": state.failures,
        "last_error": state.last_error if state.failing else None,
    }
