# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Full-image restore: a backup snapshot becomes a NEW image on a live cluster.

The public API (used by the restore module, the ``backurne`` CLI and the REST API)::

    select_snapshot(snapshot_names, selector, prefix="backup", image="") -> str
    default_target_name(backup_image, snapshot, prefix="backup") -> str
    RestoreRequest(backup_pool, backup_namespace, backup_image, snapshot,
                   target_pool, target_namespace=None, target_image=None, force=False)
    plan_restore(backup, live, request, snap_prefix="backup", now=None) -> RestorePlan
        (raises RestoreError)
    restore_snapshot(backup, live, request, stream=None, progress=None, snap_prefix="backup",
                     verify=True, hasher=DEFAULT_HASHER, now=None) -> RestoreResult
        (never raises for a failed restore: result.ok / failed_stage / error say what happened;
        ``stream`` is transfer.py's StreamOptions: zstd, timeout, stall_timeout)

``backup`` is an RbdRunner on the backup cluster, local to this node (the restore runs on the
backup node); ``live`` an RbdRunner on the live node, normally over ssh (SshTarget). The
``snapshot`` argument is a selector: an exact snapshot name, ``latest``, or ``before:ISO``.

The data path, the backup pipeline reversed (the backup node pushes)::

    rbd export-diff CLONE - | zstd          (local stages "export", "compress")
      -> ssh live "bash -o pipefail -c 'zstd -d | rbd import-diff - TARGET'"  (stage "ssh"/"import")

with the same machinery as transfer.py: one process group and one stderr per stage, every exit
status checked, the most upstream stage that failed on its own blamed, byte-counting relays,
a timeout that stops the source, and a stall watch that stops it when nothing moved for
``stall_timeout`` seconds. The import command (librbd cache off) is transfer.py's.

Why a clone: the export reads a format-2 clone of the snapshot made for the restore, not the
snapshot itself. (1) Retention on the backup cluster does not take backurne's image lock (and
a restore must not block backups for hours by holding it); a snapshot with a clone-v2 child can
still be "removed" by retention, but Ceph only moves it to the trash namespace while the child
exists, so the data being restored cannot vanish mid-stream. (2) Exporting the clone's HEAD
yields a diff stream without an end-snapshot record, so import-diff creates no snapshot on the
restored image. A backup snapshot name left on a live image would be taken by the next backup
as the incremental base although the backup image's HEAD has moved on since: silent
corruption. The clone is removed when the restore ends, whatever the outcome.

Never an overwrite: the target is created first with ``rbd create`` (which fails if the name
exists, so the check cannot race), at the snapshot's exact size. With ``force`` an existing
target is first renamed to ``<target>.backurne-replaced-<UTC time>`` (instant, keeps its data
and snapshots; refused while the image has watchers, i.e. is in use). A failed restore removes
the image it created and renames the kept one back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
    ImageSpec,
    RbdError,
    RbdRunner,
    in_creation_order,
)
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC, parse_isoformat
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    image_spec,
    parse_backup_image_name,
    validate_prefix,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import Snap
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import DEFAULT_HASHER, snapshot_checksum
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import Throttle
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import (
    PUSH,
    StreamOptions,
    import_diff_words,
    run_rbd_stream,
)

SELECT_LATEST = "latest"
SELECT_BEFORE = "before:"
RESTORE_INFIX = "-restore-"
REPLACED_INFIX = ".backurne-replaced-"
# Never of the form IDENT;DISK;COMMENT: retention and transfers leave it alone.
CLONE_PREFIX = "backurne-restore-"
_COMPACT_TIME = "%Y%m%dT%H%M%S"
# After a failed import, its watch on the target may outlive it (~30 s, osd_client_watch_timeout).
REMOVE_BUSY_WAIT = 45.0


class RestoreError(ValueError):
    """Bad input or a state that forbids the restore; the message names the culprit."""


class RestoreNotFound(RestoreError):
    """The backup image or the selected snapshot does not exist (REST: 404)."""


class RestoreConflict(RestoreError):
    """The target exists (without force) or is in use (REST: 409)."""


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore where: BACKUP_IMAGE@snapshot (a selector, see select_snapshot) of the backup
    pool, as TARGET_IMAGE (None or empty: default_target_name()) in the live target pool; ``force``
    replaces an existing target (kept, renamed). plan_restore and restore_snapshot both take it."""

    backup_pool: str
    backup_namespace: str | None
    backup_image: str
    snapshot: str
    target_pool: str
    target_namespace: str | None = None
    target_image: str | None = None
    force: bool = False

    @property
    def source(self) -> str:
        """``pool[/namespace]/image`` on the backup cluster, for messages and results."""
        return _display(self.backup_pool, self.backup_namespace or None, self.backup_image)


@dataclass
class RestorePlan:
    """What a restore would do, decided from the current state (check mode returns it)."""

    source: str  # backup pool[/ns]/image@snapshot
    backup_pool: str
    backup_namespace: str | None
    backup_image: str
    snapshot: str
    snapshot_created: str | None  # ISO time from the snapshot name
    size_bytes: int
    target: str  # live pool[/ns]/image
    target_pool: str
    target_namespace: str | None
    target_image: str
    target_exists: bool
    target_size_bytes: int | None
    action: str  # "create" or "replace"
    kept_as: str | None  # with force: the name the current target gets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreResult:
    source: str
    snapshot: str | None
    target: str | None
    action: str | None = None
    ok: bool = False
    created: bool = False  # this restore created the target image (and it is still there if ok)
    kept_as: str | None = None  # where the replaced image is now (force)
    size_bytes: int = 0
    bytes_wire: int = 0
    bytes_logical: int = 0
    duration: float = 0.0
    checksum_source: str | None = None
    checksum_target: str | None = None
    failed_stage: str | None = None  # validate, prepare, export, compress, ssh, import, stream, verify
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _display(pool: str, namespace: str | None, image: str, snap: str | None = None) -> str:
    text = "/".join(part for part in (pool, namespace, image) if part)
    return f"{text}@{snap}" if snap is not None else text


def _utc_naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def select_snapshot(snapshot_names: Iterable[str], selector: str, prefix: str = "backup", image: str = "") -> str:
    """The snapshot a selector designates among an image's snapshots.

    ``snapshot_names`` are in Ceph's creation order (oldest first). ``latest``: the newest of
    ours, the last taken (not the newest name: backurne 2.x wrote local time into names);
    ``before:ISO`` (also ``before: ISO``): the newest of ours whose name's time is strictly
    older than ISO (naive = UTC); anything else is an exact name, which must be one of ours.
    RestoreError names the selector and image.
    """
    validate_prefix(prefix)
    names = list(snapshot_names)
    ours = [s for s in (Snap.from_name(n, prefix) for n in names) if s is not None]
    where = f" of backup image {image!r}" if image else ""
    text = selector.strip() if isinstance(selector, str) else ""
    if not text:
        raise RestoreError(f"empty snapshot selector{where}")
    if text == SELECT_LATEST:
        if not ours:
            raise RestoreNotFound(f"no backurne snapshot{where} (prefix {prefix!r})")
        return ours[-1].name
    if text.startswith(SELECT_BEFORE):
        raw = text[len(SELECT_BEFORE) :].strip()
        try:
            limit = _utc_naive(parse_isoformat(raw))
        except ValueError:
            raise RestoreError(f"snapshot selector {selector!r}: {raw!r} is not an ISO 8601 time") from None
        older = [s for s in ours if s.created < limit]
        if not older:
            raise RestoreNotFound(f"no backurne snapshot{where} older than {limit.isoformat()}")
        return older[-1].name
    if text not in names:
        raise RestoreNotFound(f"snapshot {text!r} does not exist{where}")
    if Snap.from_name(text, prefix) is None:
        # A foreign snapshot is someone else's: backurne restores only what it backed up.
        raise RestoreError(f"snapshot {text!r}{where} is not a backurne snapshot (prefix {prefix!r})")
    return text


def default_target_name(backup_image: str, snapshot: str, prefix: str = "backup") -> str:
    """``<disk>-restore-<snapshot time, compact>``: the DISK field of IDENT;DISK;COMMENT.

    The time is written without ':' (qemu's rbd: URIs use ':' as a separator) and identifies
    the restored point, so restoring the same snapshot twice collides (and is refused) instead
    of silently producing a second copy.
    """
    parsed = parse_backup_image_name(backup_image)
    disk = parsed.disk if parsed is not None else backup_image
    snap = Snap.from_name(snapshot, prefix)
    if snap is None:
        raise RestoreError(f"snapshot {snapshot!r} is not a backurne snapshot: give the target image name")
    return f"{disk}{RESTORE_INFIX}{snap.created.strftime(_COMPACT_TIME)}"


def kept_name(target_image: str, now: datetime) -> str:
    return f"{target_image}{REPLACED_INFIX}{_utc_naive(now).strftime(_COMPACT_TIME)}Z"


def _check_target_name(pool: str, namespace: str | None, image: str) -> None:
    try:
        image_spec(pool, namespace, image)
    except NamingError as exc:
        raise RestoreError(f"target: {exc}") from None
    if ";" in image:
        # Legal for RBD, but such an image could never be backed up again (IDENT;DISK;COMMENT).
        raise RestoreError(f"target image {image!r} contains ';': backurne could not back it up")
    if image != image.strip() or image.startswith("-"):
        raise RestoreError(f"target image {image!r} has leading/trailing blanks or a leading '-'")


def _snapshots(backup: RbdRunner, spec: ImageSpec) -> dict[str, int]:
    """{snapshot name: size} of a backup image; RestoreError when the image does not exist."""
    try:
        entries = backup.json(["snap", "ls", *spec.options(with_snap=False)])
    except RbdError as exc:
        if exc.is_not_found:
            raise RestoreNotFound(f"backup image {spec} does not exist on {backup.label}") from None
        raise
    named = in_creation_order([e for e in entries if isinstance(e, dict) and "name" in e])
    return {str(e["name"]): int(e.get("size", 0)) for e in named}  # in Ceph order, as dicts keep it


def _refuse_in_use(live: RbdRunner, spec: ImageSpec) -> None:
    # A watcher is a running VM or a mapping: renaming the image under it would leave it
    # writing to the kept copy while the restored one waits for its next start.
    status = live.json(["status", *spec.options(with_snap=False)])
    users = [str(w.get("address", "?")) for w in status.get("watchers", []) if isinstance(w, dict)]
    if users:
        raise RestoreConflict(
            f"target image {spec} is in use ({len(users)} watcher(s): {', '.join(users)}): "
            "stop what uses it before replacing it"
        )


def _free_kept_name(live: RbdRunner, pool: str, namespace: str | None, image: str, now: datetime) -> str:
    base = kept_name(image, now)
    candidate = base
    for index in range(2, 100):
        if not live.exists(ImageSpec(pool, namespace, candidate)):
            return candidate
        candidate = f"{base}-{index}"
    raise RestoreError(f"no free name for keeping {image!r} (tried {base}…)")


def plan_restore(
    backup: RbdRunner,
    live: RbdRunner,
    request: RestoreRequest,
    snap_prefix: str = "backup",
    now: datetime | None = None,
) -> RestorePlan:
    """Validate a restore request against the current state and decide what would happen.

    Reads both clusters, changes nothing. Raises RestoreError (bad input: names the culprit;
    an existing target without ``force``) or RbdError (a cluster could not be read).
    """
    backup_pool, backup_image, target_pool = request.backup_pool, request.backup_image, request.target_pool
    backup_namespace = request.backup_namespace or None
    target_namespace = request.target_namespace or None
    target_image = request.target_image
    try:
        validate_prefix(snap_prefix)
        source = ImageSpec(backup_pool, backup_namespace, backup_image)
    except ValueError as exc:
        raise RestoreError(f"backup image: {exc}") from None
    sizes = _snapshots(backup, source)
    chosen = select_snapshot(sizes, request.snapshot, snap_prefix, request.source)
    if target_image is None or target_image == "":
        target_image = default_target_name(backup_image, chosen, snap_prefix)
    _check_target_name(target_pool, target_namespace, target_image)
    target = ImageSpec(target_pool, target_namespace, target_image)
    try:
        current = live.image_info(target)
    except RbdError as exc:
        if not exc.is_not_found:
            raise
        current = None
    kept_as = None
    if current is not None:
        if not request.force:
            raise RestoreConflict(
                f"target image {target} already exists on {live.label}: not overwritten "
                "(choose another target image, or force to replace it; the current image is kept, renamed)"
            )
        _refuse_in_use(live, target)
        kept_as = _free_kept_name(live, target_pool, target_namespace, target_image, now or datetime.now(UTC))
    snap = Snap.from_name(chosen, snap_prefix)
    return RestorePlan(
        source=_display(backup_pool, backup_namespace, backup_image, chosen),
        backup_pool=backup_pool,
        backup_namespace=backup_namespace,
        backup_image=backup_image,
        snapshot=chosen,
        snapshot_created=snap.created.isoformat() if snap else None,
        size_bytes=sizes[chosen],
        target=str(target),
        target_pool=target_pool,
        target_namespace=target_namespace,
        target_image=target_image,
        target_exists=current is not None,
        target_size_bytes=int(current["size"]) if current is not None and "size" in current else None,
        action="replace" if current is not None else "create",
        kept_as=kept_as,
    )


# -- the restore ------------------------------------------------------------------------------


def _image_options(flag_prefix: str, spec: ImageSpec) -> list[str]:
    """--dest-pool=/--dest-namespace=/--dest= for the second image of clone and rename."""
    words = [f"--{flag_prefix}pool={spec.pool}"]
    if spec.namespace:
        words.append(f"--{flag_prefix}namespace={spec.namespace}")
    return [*words, f"--dest={spec.image}"]


def _make_clone(backup: RbdRunner, plan: RestorePlan) -> ImageSpec:
    clone = ImageSpec(plan.backup_pool, plan.backup_namespace, f"{CLONE_PREFIX}{uuid.uuid4().hex[:12]}")
    parent = ImageSpec(plan.backup_pool, plan.backup_namespace, plan.backup_image, plan.snapshot)
    # Format 2: no `snap protect` needed, and the parent snapshot goes to the trash (not away)
    # if retention removes it meanwhile.
    backup.run(["clone", "--rbd-default-clone-format=2", *parent.options(), *_image_options("dest-", clone)])
    return clone


def _rename(live: RbdRunner, source: ImageSpec, dest: ImageSpec) -> None:
    live.run(["rename", *source.options(with_snap=False), *_image_options("dest-", dest)])


def _remove_created(live: RbdRunner, spec: ImageSpec) -> None:
    deadline = time.monotonic() + REMOVE_BUSY_WAIT
    while True:
        try:
            live.remove(spec)
            return
        except RbdError as exc:
            if exc.is_not_found:
                return
            # A killed or just-failed import-diff leaves its watch for a while: wait it out.
            if not (exc.is_busy or "watchers" in exc.stderr) or time.monotonic() > deadline:
                raise
        time.sleep(2)


def _hash(runner: RbdRunner, spec: ImageSpec, hasher: Sequence[str], timeout: float | None) -> str:
    """The checksum module's hash of SPEC (a snapshot, or an image's HEAD when spec.snap is None)."""
    return snapshot_checksum(runner, spec.pool, spec.namespace, spec.image, spec.snap, hasher, timeout)


def import_words(live: RbdRunner, target: ImageSpec) -> list[str]:
    return import_diff_words(live.access, target)


def export_words(backup: RbdRunner, clone: ImageSpec) -> list[str]:
    return backup.access.rbd_argv("export-diff", "--no-progress", *clone.options(with_snap=False), "--path=-")


def _stream(
    backup: RbdRunner,
    live: RbdRunner,
    clone: ImageSpec,
    target: ImageSpec,
    stream: StreamOptions,
    progress: Callable[[int], None] | None,
    result: RestoreResult,
    throttle: Throttle | None = None,
) -> None:
    rbd_words = (import_words(live, target), export_words(backup, clone))
    run_rbd_stream(live, rbd_words, PUSH, stream, progress, result, throttle)


def _verify(
    backup: RbdRunner,
    live: RbdRunner,
    plan: RestorePlan,
    clone: ImageSpec,
    target: ImageSpec,
    hasher: Sequence[str],
    timeout: float | None,
    result: RestoreResult,
) -> None:
    snap = ImageSpec(plan.backup_pool, plan.backup_namespace, plan.backup_image, plan.snapshot)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backurne-restore-verify") as pool:
        source_hash = pool.submit(_hash, backup, snap, hasher, timeout)
        target_hash = pool.submit(_hash, live, target, hasher, timeout)
        try:
            result.checksum_source = source_hash.result()
        except RbdError as exc:
            if not exc.is_not_found:
                raise
            # Retention removed the snapshot meanwhile (it waits in the trash for our clone):
            # the clone is the same frozen content.
            result.checksum_source = _hash(backup, clone, hasher, timeout)
            result.notes.append(f"snapshot {plan.snapshot!r} was removed during the restore; its clone was hashed")
        result.checksum_target = target_hash.result()
    if result.checksum_source != result.checksum_target:
        raise RestoreError(
            f"checksums differ: backup {plan.source} {result.checksum_source}, "
            f"restored {plan.target} {result.checksum_target}"
        )


def restore_snapshot(
    backup: RbdRunner,
    live: RbdRunner,
    request: RestoreRequest,
    stream: StreamOptions | None = None,
    progress: Callable[[int], None] | None = None,
    snap_prefix: str = "backup",
    verify: bool = True,
    hasher: Sequence[str] = DEFAULT_HASHER,
    now: datetime | None = None,
    throttle: Throttle | None = None,
) -> RestoreResult:
    """Restore the request's BACKUP_IMAGE@snapshot (a selector, see select_snapshot) as a new live image.

    Runs on the backup node: ``backup`` must be local, ``live`` reaches the live node (ssh).
    ``target_image`` None: default_target_name(). ``force``: an existing target is renamed to
    ``RestorePlan.kept_as`` first (refused while it has watchers). ``stream.timeout`` bounds the
    streaming and each checksum (None: no limit); ``stream.stall_timeout`` fails a stream that has
    not moved a byte for that many seconds (None: never); default StreamOptions() (zstd level 1,
    no timeout, the default stall watch). ``progress(bytes)`` gets the cumulative
    bytes read from the export (about RestorePlan.size_bytes at most, for a sparse image far
    less); it is called from a relay thread and its exceptions are ignored. ``verify`` hashes
    the backup snapshot and the restored image and fails the restore when they differ.
    ``throttle``: the bandwidth limit of the stream to the live node (throttle.py), None for none.

    Never raises for a failed restore: ``ok``, ``failed_stage`` (validate, prepare, export,
    compress, ssh, import, stream, verify) and ``error`` say what happened, ``notes`` what was
    cleaned up. A failed restore leaves no image it created and puts a replaced image back.
    """
    stream = stream or StreamOptions()
    started = time.monotonic()
    result = RestoreResult(source=request.source, snapshot=None, target=None)
    try:
        if backup.is_remote:
            raise RestoreError("the export side runs on this node: the backup runner must be local")
        plan = plan_restore(backup, live, request, snap_prefix, now)
    except (RestoreError, RbdError, ValueError) as exc:
        result.failed_stage, result.error = "validate", str(exc)
        result.duration = round(time.monotonic() - started, 3)
        return result
    result.source, result.snapshot, result.target = plan.source, plan.snapshot, plan.target
    result.action, result.size_bytes = plan.action, plan.size_bytes
    _run(backup, live, plan, stream, progress, verify, hasher, result, throttle)
    result.duration = round(time.monotonic() - started, 3)
    return result


def _run(
    backup: RbdRunner,
    live: RbdRunner,
    plan: RestorePlan,
    stream: StreamOptions,
    progress: Callable[[int], None] | None,
    verify: bool,
    hasher: Sequence[str],
    result: RestoreResult,
    throttle: Throttle | None = None,
) -> None:
    target = ImageSpec(plan.target_pool, plan.target_namespace, plan.target_image)
    kept = ImageSpec(plan.target_pool, plan.target_namespace, plan.kept_as) if plan.kept_as else None
    clone: ImageSpec | None = None
    renamed = False
    stage = "prepare"
    try:
        clone = _make_clone(backup, plan)
        if kept is not None:
            _refuse_in_use(live, target)  # again: it may have started since the plan
            _rename(live, target, kept)
            renamed = True
            result.kept_as = plan.kept_as
        # Fails if the name exists (again): never an overwrite, even against a racing writer.
        live.create(target, plan.size_bytes)
        result.created = True
        stage = "stream"
        _stream(backup, live, clone, target, stream, progress, result, throttle)
        if result.ok and verify:
            stage = "verify"
            result.ok = False
            _verify(backup, live, plan, clone, target, hasher, stream.timeout, result)
            result.ok = True
    except (RestoreError, RbdError, ValueError, OSError) as exc:
        result.ok = False
        result.failed_stage = stage
        result.error = f"{result.failed_stage}: {exc}"
    finally:
        if clone is not None:
            try:
                backup.remove(clone)
            except RbdError as exc:
                result.notes.append(f"could not remove the temporary clone {clone}: {exc}")
        if not result.ok:
            _undo(live, target, kept, renamed, result)


def _undo(live: RbdRunner, target: ImageSpec, kept: ImageSpec | None, renamed: bool, result: RestoreResult) -> None:
    """After a failure: remove the image this restore created, put a replaced one back."""
    if result.created:
        try:
            _remove_created(live, target)
            result.created = False
            result.notes.append(f"removed the partly restored image {target}")
        except RbdError as exc:
            result.notes.append(f"could not remove the partly restored image {target}: {exc}")
    if renamed and kept is not None:
        if result.created:
            result.notes.append(f"the previous image is kept as {kept}: rename it back once {target} is gone")
            return
        try:
            _rename(live, kept, target)
            result.kept_as = None
            result.notes.append(f"renamed {kept} back to {target}")
        except RbdError as exc:
            result.notes.append(f"the previous image is kept as {kept}; renaming it back failed: {exc}")
