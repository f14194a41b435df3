# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# A cluster-wide lock per backup image, so that two backup nodes (or two runs) never write the
# same backup image at once.
#
# Mechanism: an exclusive RADOS class lock named "backurne" on the image's header object
# (rbd_header.<id>), taken with `rados lock get`. Why not `rbd lock add`: rbd's advisory locks
# share the lock name ("rbd_lock") with librbd's exclusive-lock feature, which is on by default
# on every image; while an advisory lock is held, the image's own writers cannot acquire the
# exclusive lock (verified on 16.2.15: `rbd snap create` and `rbd resize` fail with "(30)
# Read-only file system", `rbd import-diff` spins at 100 % CPU until killed). A lock of
# another name on the same object is just as cluster-wide and atomic, dies with the image
# (`rbd rm` deletes the header object), and leaves librbd alone. `rados lock list
# rbd_header.<id>` shows it to an operator; `rbd lock ls` does not.
#
# The lock cookie is LOCK_ID = "backurne;HOSTNAME;PID;ISOTIME" so that any node can tell a
# stale holder: older than the ttl, or on this very host with a dead pid.
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC

LOCK_NAME = "backurne"
LOCK_PREFIX = "backurne"
LOCK_DESCRIPTION = "backurne backup writer"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class Holder:
    lock_id: str
    locker: str  # the RADOS client holding it, e.g. "client.4205"
    address: str = ""


@dataclass(frozen=True)
class Lock:
    pool: str
    namespace: str | None
    image: str
    lock_id: str
    locker: str
    header_object: str
    # Set when a stale lock had to be broken first: say so in the report.
    broke_stale: str | None = None
    # The image's size when the lock was taken (from the same `rbd info` that found the header
    # object): lets a caller tell an untouched placeholder without another rbd call.
    size: int | None = None
    # Taken by this process's RADOS client (rados_direct.RadosSession), released by it too.
    in_process: bool = False


@dataclass(frozen=True)
class LockBusy:
    pool: str
    namespace: str | None
    image: str
    holder: str
    locker: str = ""

    @property
    def message(self) -> str:
        spec = ImageSpec(self.pool, self.namespace, self.image)
        return f"backup image {spec} is locked by {self.holder} ({self.locker or 'unknown client'})"


class LockBusyError(RuntimeError):
    def __init__(self, busy: LockBusy) -> None:
        self.busy = busy
        super().__init__(busy.message)


def _utc(moment: datetime) -> datetime:
    # The policy clock is naive UTC (snapshot names carry no zone); accept both.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def make_lock_id(now: datetime, hostname: str | None = None, pid: int | None = None) -> str:
    host = hostname or socket.gethostname()
    return f"{LOCK_PREFIX};{host};{os.getpid() if pid is None else pid};{_utc(now).strftime(_TIME_FORMAT)}"


def parse_lock_id(lock_id: str) -> tuple[str, int, datetime] | None:
    """(hostname, pid, time) of a backurne lock id; None for anything else."""
    parts = lock_id.split(";")
    if len(parts) != 4 or parts[0] != LOCK_PREFIX:
        return None
    try:
        return parts[1], int(parts[2]), datetime.strptime(parts[3], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a lock holder, a transfer's status file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's live process
    return True


def stale_reason(lock_id: str, ttl: timedelta, now: datetime) -> str | None:
    """Why a lock may be broken, or None while its holder must be presumed alive."""
    parsed = parse_lock_id(lock_id)
    if parsed is None:
        # Not ours: somebody else's mechanism, never broken.
        return None
    host, pid, taken = parsed
    age = _utc(now) - taken
    if age > ttl:
        return f"taken {age} ago, ttl {ttl}"
    if host == socket.gethostname() and not pid_alive(pid):
        return f"pid {pid} on {host} is gone"
    return None


def _object_args(spec: ImageSpec) -> list[str]:
    args = [f"--pool={spec.pool}"]
    if spec.namespace:
        args.append(f"--namespace={spec.namespace}")
    return args


def holders(runner: RbdRunner, spec: ImageSpec, header_object: str) -> list[Holder]:
    out = runner.run_rados([*_object_args(spec), "lock", "info", header_object, LOCK_NAME, "--format=json"])
    info: dict[str, Any] = runner.parse_json(out, ["lock", "info", *_object_args(spec)], tool="rados")
    return [
        Holder(str(entry.get("cookie", "")), str(entry.get("name", "")), str(entry.get("addr", "")))
        for entry in info.get("lockers", [])
    ]


def _break(runner: RbdRunner, spec: ImageSpec, header_object: str, holder: Holder) -> None:
    runner.run_rados(
        [
            *_object_args(spec),
            "lock",
            "break",
            header_object,
            LOCK_NAME,
            holder.locker,
            f"--lock-cookie={holder.lock_id}",
        ]
    )


def try_acquire(
    runner: RbdRunner,
    pool: str,
    namespace: str | None,
    image: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> Lock | LockBusy:
    """Take the backup image's lock, breaking a stale one; LockBusy if a live holder has it.

    The image must exist (the lock lives on its header object).
    """
    now = datetime.now(UTC) if now is None else now
    spec = ImageSpec(pool, namespace, image)
    header, size, _snapshots = runner.header(spec)
    lock_id = make_lock_id(now)
    # Take first, look second: the lock is free in nearly every case, and the holders are read
    # only when it is not (one rados call per image saved, see docs/performance.md).
    session = runner.rados_session()
    if session is not None:
        # In process: no rados CLI at all when the lock is free. Held, or any doubt: the CLI
        # path below looks at the holders and breaks a stale one.
        try:
            if session.lock_exclusive(pool, namespace, header, LOCK_NAME, lock_id, LOCK_DESCRIPTION):
                return Lock(pool, namespace, image, lock_id, session.locker, header, None, size, in_process=True)
        except Exception:  # pylint: disable=broad-exception-caught
            pass
    elif _get(runner, spec, header, lock_id):
        return _confirm(runner, spec, header, lock_id, None, size)
    broken: list[str] = []
    for holder in holders(runner, spec, header):
        reason = stale_reason(holder.lock_id, ttl, now)
        if reason is None:
            return LockBusy(pool, namespace, image, holder.lock_id, holder.locker)
        try:
            _break(runner, spec, header, holder)
        except RbdError as exc:
            if not exc.is_not_found:  # someone else broke or released it meanwhile: fine
                raise
        broken.append(f"broke stale lock {holder.lock_id} of {holder.locker}: {reason}")
    if not _get(runner, spec, header, lock_id):
        # Lost a race with another node between our look and our take.
        current = holders(runner, spec, header)
        holder = current[0] if current else Holder("unknown", "")
        return LockBusy(pool, namespace, image, holder.lock_id, holder.locker)
    return _confirm(runner, spec, header, lock_id, "; ".join(broken) or None, size)


def _get(runner: RbdRunner, spec: ImageSpec, header: str, lock_id: str) -> bool:
    """Take the exclusive lock; False when somebody holds it."""
    try:
        runner.run_rados(
            [
                *_object_args(spec),
                "lock",
                "get",
                header,
                LOCK_NAME,
                f"--lock-cookie={lock_id}",
                f"--lock-description={LOCK_DESCRIPTION}",
            ]
        )
    except RbdError as exc:
        if exc.is_busy or exc.is_exists:
            return False
        raise
    return True


def _confirm(
    runner: RbdRunner, spec: ImageSpec, header: str, lock_id: str, broke_stale: str | None, size: int | None
) -> Lock:
    # Our locker name (the rados CLI's client id) is needed to release the lock from another
    # client later; `lock get` does not print it.
    mine = [holder for holder in holders(runner, spec, header) if holder.lock_id == lock_id]
    if not mine:
        raise RbdError([], 0, "", runner.label, action="lock", subject=str(spec), cause="lock taken but not listed")
    return Lock(spec.pool, spec.namespace, spec.image, lock_id, mine[0].locker, header, broke_stale, size)


def release(runner: RbdRunner, lock: Lock) -> None:
    """Drop the lock; a lock already gone (broken, image removed) is not an error."""
    spec = ImageSpec(lock.pool, lock.namespace, lock.image)
    session = runner.rados_session() if lock.in_process else None
    if session is not None:
        try:
            session.unlock(lock.pool, lock.namespace, lock.header_object, LOCK_NAME, lock.lock_id)
            return
        except Exception:  # pylint: disable=broad-exception-caught
            pass  # the CLI below breaks it by our client's name and the cookie
    try:
        # `lock break` with our own client and cookie: `unlock` would only work from the very
        # RADOS client (process) that took it, and the rados CLI is a new client every call.
        _break(runner, spec, lock.header_object, Holder(lock.lock_id, lock.locker))
    except RbdError as exc:
        if not exc.is_not_found:
            raise


@contextmanager
def image_lock(
    runner: RbdRunner, pool: str, namespace: str | None, image: str, ttl: timedelta, now: datetime | None = None
) -> Iterator[Lock]:
    """`with image_lock(...) as lock:`; raises LockBusyError when another holder is alive."""
    outcome = try_acquire(runner, pool, namespace, image, ttl, now)
    if isinstance(outcome, LockBusy):
        raise LockBusyError(outcome)
    try:
        yield outcome
    finally:
        release(runner, outcome)
