# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The per-backup-image lock on the real backup cluster, with the restricted client.
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph import lock as lockmod
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import (
    Lock,
    LockBusy,
    LockBusyError,
    image_lock,
    make_lock_id,
    release,
    try_acquire,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import transfer_snapshot

POOL = "rbd"
TTL = timedelta(hours=6)


@pytest.fixture(scope="module")
def backup(lab: Any) -> RbdRunner:
    access = CephAccess(ceph_client="backurne", keyring=str(lab.keyring("backup")), ceph_conf=str(lab.backup_conf))
    return RbdRunner(access, label="backup node (local)")


@pytest.fixture
def image(backup: RbdRunner, ns: str) -> ImageSpec:
    spec = ImageSpec(POOL, ns, "c;vm-1-disk-0;None")
    backup.create(spec, 4 << 20)
    return spec


def take(backup: RbdRunner, image: ImageSpec, now: datetime | None = None, ttl: timedelta = TTL) -> Lock | LockBusy:
    return try_acquire(backup, image.pool, image.namespace, image.image, ttl, now)


def holders(backup: RbdRunner, image: ImageSpec) -> list[lockmod.Holder]:
    header = f"rbd_header.{backup.image_info(image)['id']}"
    return lockmod.holders(backup, image, header)


def plant(backup: RbdRunner, image: ImageSpec, cookie: str) -> None:
    """A lock taken by "someone else" (another rados client)."""
    header = f"rbd_header.{backup.image_info(image)['id']}"
    where = [f"--pool={image.pool}", f"--namespace={image.namespace}"]
    backup.run_rados([*where, "lock", "get", header, lockmod.LOCK_NAME, f"--lock-cookie={cookie}"])


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_acquire_busy_release(backup: RbdRunner, image: ImageSpec) -> None:
    first = take(backup, image)
    assert isinstance(first, Lock) and first.broke_stale is None
    assert first.lock_id.startswith(f"backurne;{socket.gethostname()};")
    assert [holder.lock_id for holder in holders(backup, image)] == [first.lock_id]
    second = take(backup, image)
    assert isinstance(second, LockBusy)
    assert (second.holder, second.locker) == (first.lock_id, first.locker)
    assert "is locked by backurne;" in second.message
    release(backup, first)
    assert holders(backup, image) == []
    release(backup, first)  # twice is harmless
    third = take(backup, image)
    assert isinstance(third, Lock)
    release(backup, third)


def test_writers_still_work_while_locked(lab: Any, backup: RbdRunner, image: ImageSpec) -> None:
    # `rbd lock add` would make these fail (EROFS) or spin: the lock must not.
    held = take(backup, image)
    assert isinstance(held, Lock)
    try:
        backup.snap_create(image.at("s1"))
        backup.resize(image, 8 << 20)
        lab.rbd("backup", "import-diff", "--no-progress", "-", str(image), input=_tiny_diff("s2"), timeout=30)
        assert backup.list_images(POOL, image.namespace)[image.image] == ["s1", "s2"]
    finally:
        release(backup, held)


def _tiny_diff(to_snap: str) -> bytes:
    import struct

    name = to_snap.encode()
    return (
        b"rbd diff v1\n" + b"t" + struct.pack("<I", len(name)) + name + b"w" + struct.pack("<QQ", 0, 4) + b"data" + b"e"
    )


def test_stale_by_age_is_broken(backup: RbdRunner, image: ImageSpec) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=7)
    old = take(backup, image, now=long_ago)
    assert isinstance(old, Lock)
    fresh = take(backup, image)
    assert isinstance(fresh, Lock)
    assert fresh.broke_stale and old.lock_id in fresh.broke_stale and "ttl" in fresh.broke_stale
    assert [holder.lock_id for holder in holders(backup, image)] == [fresh.lock_id]
    release(backup, fresh)


def test_naive_now_is_utc(backup: RbdRunner, image: ImageSpec) -> None:
    naive = datetime.now(UTC).replace(tzinfo=None)
    first = take(backup, image, now=naive)
    assert isinstance(first, Lock)
    assert isinstance(take(backup, image, now=naive + timedelta(minutes=1)), LockBusy)
    assert isinstance(take(backup, image, now=naive + TTL + timedelta(minutes=1)), Lock)


def test_stale_by_dead_pid_on_this_host_is_broken(backup: RbdRunner, image: ImageSpec) -> None:
    cookie = make_lock_id(datetime.now(UTC), pid=dead_pid())
    plant(backup, image, cookie)
    mine = take(backup, image)
    assert isinstance(mine, Lock)
    assert mine.broke_stale and "is gone" in mine.broke_stale
    release(backup, mine)


@pytest.mark.parametrize(
    "cookie",
    [
        # alive as far as we can tell: another host, recent
        make_lock_id(datetime.now(UTC), hostname="other-backup-node", pid=1),
        # not ours at all: never broken, however old
        "someone-else-cookie",
    ],
    # fixed ids: the cookie holds the collection time, and pytest-xdist workers must collect
    # the same test names
    ids=["other-host-recent", "foreign-cookie"],
)
def test_live_or_foreign_holder_is_busy(backup: RbdRunner, image: ImageSpec, cookie: str) -> None:
    plant(backup, image, cookie)
    busy = take(backup, image)
    assert isinstance(busy, LockBusy) and busy.holder == cookie
    # Past the ttl our own kind of lock is broken; a foreign one never is.
    late = take(backup, image, ttl=timedelta(0))
    assert isinstance(late, Lock if cookie.startswith("backurne;") else LockBusy)


def test_context_manager(backup: RbdRunner, image: ImageSpec) -> None:
    with image_lock(backup, image.pool, image.namespace, image.image, TTL) as held:
        assert [holder.lock_id for holder in holders(backup, image)] == [held.lock_id]
        busy = image_lock(backup, image.pool, image.namespace, image.image, TTL)
        with pytest.raises(LockBusyError, match="is locked by"), busy:
            pass
    assert holders(backup, image) == []


def test_missing_image(backup: RbdRunner, ns: str) -> None:
    with pytest.raises(RbdError) as info:
        try_acquire(backup, POOL, ns, "nothing", TTL)
    assert info.value.is_not_found


def test_transfer_respects_and_releases_the_lock(lab: Any, backup: RbdRunner, image: ImageSpec, ns: str) -> None:
    live = RbdRunner(CephAccess(ceph_client="backurne", keyring=str(lab.keyring("live")), ceph_conf=str(lab.live_conf)))
    lab.write_image("live", f"{POOL}/{ns}/src", 8, seed=30)
    live.snap_create(ImageSpec(POOL, ns, "src", "s1"))
    other = take(backup, image)
    assert isinstance(other, Lock)
    refused = transfer_snapshot(live, backup, POOL, ns, "src", "s1", None, POOL, ns, image.image, lock_ttl=TTL)
    assert (refused.ok, refused.failed_stage) == (False, "prepare")
    assert "is locked by" in (refused.error or "")
    assert backup.exists(image)  # somebody else's image: never removed
    release(backup, other)
    done = transfer_snapshot(live, backup, POOL, ns, "src", "s1", None, POOL, ns, image.image, lock_ttl=TTL)
    assert done.ok, done
    assert holders(backup, image) == []
    fresh = transfer_snapshot(live, backup, POOL, ns, "src", "s1", None, POOL, ns, "new-dest", lock_ttl=TTL)
    assert fresh.ok, fresh
    assert holders(backup, ImageSpec(POOL, ns, "new-dest")) == []
