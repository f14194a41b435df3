# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Proof that a backup snapshot holds what the live one holds: hash `rbd export IMG@SNAP -` on
# each side, where the data lives (only the hash crosses the network), and compare.
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import LockBusy, release, try_acquire
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner

DEFAULT_HASHER: tuple[str, ...] = ("xxhsum",)


@dataclass
class ChecksumResult:
    image: str
    snapshot: str
    live: str | None
    backup: str | None
    match: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_checksum(
    runner: RbdRunner,
    pool: str,
    namespace: str | None,
    image: str,
    snap: str | None,
    hasher: Sequence[str] = DEFAULT_HASHER,
    timeout: float | None = None,
) -> str:
    """Hash of the full content of image@snap (snap None: the image's HEAD), computed on the runner's node.

    `timeout` None means no limit (the time grows with the image: ~1.5 s/GiB here).
    """
    if not hasher:
        raise ValueError("empty hasher command")
    return spec_checksum(runner, ImageSpec(pool, namespace, image, snap), hasher, timeout)


def spec_checksum(runner: RbdRunner, spec: ImageSpec, hasher: Sequence[str], timeout: float | None = None) -> str:
    """Hash of `rbd export SPEC -` piped through `hasher` on the runner's node (the first word it prints).

    The one place that hashes an image: the checksum module (live against backup) and a restore's
    verification (restored against its backup snapshot) must compare the same thing.
    """
    export = runner.access.rbd_argv("export", "--no-progress", *spec.options(), "--path=-")
    # pipefail in run_pipeline: a failed export must not yield the hash of a truncated stream.
    out = runner.run_pipeline([export, list(hasher)], timeout=timeout, action="checksum of", subject=str(spec))
    words = out.split()
    if not words:
        raise RbdError([], 0, "", runner.label, action="checksum of", subject=str(spec), cause="hasher printed nothing")
    return words[0]


def compare_snapshot(
    live_runner: RbdRunner,
    backup_runner: RbdRunner,
    live_loc: ImageSpec | str,
    backup_loc: ImageSpec | str,
    snap: str,
    hasher: Sequence[str] = DEFAULT_HASHER,
    timeout: float | None = None,
) -> ChecksumResult:
    """Hash snap on both sides at once (each side reads its own cluster) and compare."""
    live_spec = ImageSpec.of(live_loc).at(None)
    backup_spec = ImageSpec.of(backup_loc).at(None)

    def side(runner: RbdRunner, spec: ImageSpec) -> str:
        return snapshot_checksum(runner, spec.pool, spec.namespace, spec.image, snap, hasher, timeout)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backurne-checksum") as pool:
        futures = {
            "live": pool.submit(side, live_runner, live_spec),
            "backup": pool.submit(side, backup_runner, backup_spec),
        }
        hashes: dict[str, str | None] = {}
        errors: list[str] = []
        for name, future in futures.items():
            try:
                hashes[name] = future.result()
            except (RbdError, ValueError, OSError) as exc:
                hashes[name] = None
                errors.append(f"{name}: {exc}")
    live_hash, backup_hash = hashes["live"], hashes["backup"]
    match = live_hash is not None and live_hash == backup_hash
    error = "; ".join(errors) or (None if match else f"checksums differ: live {live_hash}, backup {backup_hash}")
    return ChecksumResult(str(live_spec), snap, live_hash, backup_hash, match, error)


# -- self-healing: a backup snapshot found unequal to live is set aside -----------------------
#
# A backup snapshot whose data differs from the live one must never be the base of another
# incremental: every later snapshot would inherit the damage. It is removed from the backup
# image (only ours, PREFIX;...; never a foreign snapshot), under the backup lock so that no
# transfer uses it meanwhile. Its older shared snapshots are hashed too, newest first, until one
# matches: a diff applied on a damaged base gives a damaged snapshot, so the newest mismatch may
# come from further back, and removing only it would make every later run re-send the same
# damage. The walk stops at the first match (the newest confirmed shared snapshot, from which
# the next run re-sends, onto a HEAD rolled back to it by the HEAD guard) or at the first
# snapshot it cannot compare (it is then neither confirmed nor removed).


@dataclass
class SetAside:
    """What set_aside_mismatches did to one backup image."""

    differing: list[str] = field(default_factory=list)  # found unequal to live, newest first
    removed: list[str] = field(default_factory=list)  # oldest first
    confirmed: str | None = None  # the newest older shared snapshot found equal on both sides
    undecided: str | None = None  # the older shared snapshot the walk could not compare
    foreign: list[str] = field(default_factory=list)  # differed, but not ours: left in place
    listing: list[str] | None = None  # the backup image's snapshots afterwards, oldest first
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False  # check mode: `removed` holds what would be removed

    def unconfirmed(self) -> list[str]:
        """Snapshots of `listing` that must not count as backed up: from the undecided one on,
        else everything newer than the confirmed one (nothing shared is left there anyway)."""
        listing = self.listing or []
        start = self.undecided if self.undecided in listing else self.confirmed
        later: list[str] = []
        if start in listing:
            index = listing.index(start)
            later = listing[index:] if start == self.undecided else listing[index + 1 :]
        # A differing snapshot still there (foreign, or its removal failed) never counts either.
        return [name for name in listing if name in later or name in self.differing]


def set_aside_mismatches(
    live: RbdRunner,
    backup: RbdRunner,
    live_spec: ImageSpec,
    backup_spec: ImageSpec,
    mismatched: str,
    prefix: str,
    compare: Callable[[str], ChecksumResult],
    lock_ttl: timedelta,
    remove: bool = True,
) -> SetAside:
    """Remove `mismatched` (found unequal to live) and the older shared snapshots that differ too.

    `prefix` is the snapshot prefix with its `;`. `compare(snap)` hashes one snapshot on both
    sides. `remove=False` (check mode) only says what would go. Errors are returned, never
    raised: the image has failed already, the caller reports everything.
    """
    outcome = SetAside(dry_run=not remove)
    image = backup_spec.at(None)
    try:
        lock = try_acquire(backup, image.pool, image.namespace, image.image, lock_ttl)
    except (RbdError, ValueError, OSError) as exc:
        outcome.errors.append(f"not removed: cannot lock the backup image: {exc}")
        return outcome
    if isinstance(lock, LockBusy):
        outcome.errors.append(f"not removed: {lock.message}")
        return outcome
    try:
        backup_names = backup.snapshot_names(image)
        live_names = set(live.snapshot_names(live_spec.at(None)))
        newer_than = backup_names.index(mismatched) if mismatched in backup_names else len(backup_names)
        bad = [mismatched] if mismatched in backup_names else []
        older_shared = [name for name in backup_names[:newer_than] if name in live_names and name.startswith(prefix)]
        for name in reversed(older_shared):
            compared = compare(name)
            if compared.match:
                outcome.confirmed = name
                break
            if compared.live is None or compared.backup is None:
                outcome.undecided = name
                outcome.errors.append(f"older snapshot {name!r} could not be compared: {compared.error}")
                break
            bad.append(name)
        outcome.differing = bad
        for name in bad:
            if not name.startswith(prefix):
                outcome.foreign.append(name)
            elif not remove:
                outcome.removed.append(name)
            else:
                try:
                    backup.snap_remove(image.at(name))
                except RbdError as exc:
                    outcome.errors.append(f"could not remove {name!r}: {exc}")
                else:
                    outcome.removed.append(name)
        outcome.listing = [name for name in backup_names if name not in outcome.removed]
        outcome.removed = [name for name in backup_names if name in outcome.removed]
    except (RbdError, ValueError, OSError) as exc:
        outcome.errors.append(f"set aside: {exc}")
    finally:
        try:
            release(backup, lock)
        except RbdError as exc:
            outcome.errors.append(f"could not release the lock: {exc}")
    return outcome


def set_aside_note(backup_image: str, compared: ChecksumResult, outcome: SetAside) -> str:
    """One sentence for the report: what differed, what was removed, where the next run starts."""
    head = (
        f"backup snapshot {compared.snapshot!r} of {backup_image!r} differed from live "
        f"(checksums {compared.live} != {compared.backup})"
    )
    removed = "would be removed" if outcome.dry_run else "removed"
    parts = []
    if compared.snapshot in outcome.removed:
        parts.append(f"{head}: {removed}")
    elif compared.snapshot in outcome.foreign:
        parts.append(f"{head}: not a backurne snapshot, left in place")
    else:
        parts.append(f"{head}: not removed")
    older = [name for name in outcome.removed if name != compared.snapshot]
    if older:
        parts.append(f"older snapshot(s) {', '.join(map(repr, older))} differed too: {removed}")
    if outcome.foreign and compared.snapshot not in outcome.foreign:
        parts.append(f"foreign snapshot(s) {', '.join(map(repr, outcome.foreign))} differed too: left in place")
    if outcome.removed:
        if outcome.confirmed is not None:
            parts.append(f"the next run re-sends from the newest confirmed shared snapshot {outcome.confirmed!r}")
        elif outcome.undecided is None:
            parts.append("no confirmed shared snapshot is left: the next run sends a full backup")
    parts.extend(outcome.errors)
    return "; ".join(parts)
