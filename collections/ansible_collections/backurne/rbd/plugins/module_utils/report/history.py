# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What monitoring remembers between runs: a small sqlite database in the state directory.

``STATE_DIR/history.sqlite`` on the backup node that runs both the backup and the check
(``backup_nodes[0]`` in the playbooks). Two tables:

- ``seen``: the first and last time the check saw each live image (per live cluster) and the
  backup image it expects for it. An image first seen an hour ago is not reported before its
  first backup window, even where Ceph's ``create_timestamp`` is unknown.
- ``transfers``: per backup image, the last successful and the last failed transfer (with its
  error), written by the transfer module at the end of each image. The check reports an image
  whose latest attempt failed, between backup runs, without waiting for it to age.
- ``freezes``: per backup image of a Proxmox guest, the outcome of the guest's last fsfreeze
  (proxmox_snapshot's ``freeze`` in each plan, written by the transfer module that receives the
  plans): the check reports a guest that may have been left frozen until a later freeze of it is
  confirmed thawed.
- ``set_aside``: per backup image, the last time a backup snapshot was found unequal to live (by
  the checksum module: backup.yml with verify on, verify.yml) and removed, with the note saying
  what. The check reports it until a later successful transfer of that image.
- ``deferred``: the backup images whose transfer a backup window (``window_end``) kept from
  starting in the last run that planned one; the next run starts them first. An image leaves
  it when its transfer is attempted again (sent, failed, or found up to date).

Times are naive UTC datetimes (as in the policy), stored as ISO text. Plain ``sqlite3`` from
the standard library; writers wait up to 30 s for a lock (two modules on one node).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import parse_isoformat

DB_NAME = "history.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    live_cluster TEXT NOT NULL,
    image TEXT NOT NULL,
    backup_image TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (live_cluster, image)
);
CREATE TABLE IF NOT EXISTS transfers (
    backup_image TEXT PRIMARY KEY,
    image TEXT,
    last_success TEXT,
    last_failure TEXT,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS freezes (
    backup_image TEXT PRIMARY KEY,
    guest TEXT,
    time TEXT NOT NULL,
    may_be_frozen INTEGER NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS deferred (
    backup_image TEXT PRIMARY KEY,
    image TEXT,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS set_aside (
    backup_image TEXT PRIMARY KEY,
    image TEXT,
    at TEXT NOT NULL,
    snapshots TEXT NOT NULL,
    detail TEXT
);
"""


@dataclass(frozen=True)
class TransferState:
    """The last outcomes of transfers into one backup image; ``failures`` counts those in a row."""

    backup_image: str
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    failures: int
    # The last checksum mismatch that set backup snapshots aside (see ``set_aside``).
    set_aside_at: datetime | None = None
    set_aside_snapshots: tuple[str, ...] = ()
    set_aside_detail: str | None = None

    @property
    def healing(self) -> bool:
        """Snapshots were set aside after a mismatch and no transfer has succeeded since."""
        if self.set_aside_at is None:
            return False
        return self.last_success is None or self.last_success < self.set_aside_at

    @property
    def failing(self) -> bool:
        """The latest attempt failed."""
        if self.last_failure is None:
            return False
        return self.last_success is None or self.last_failure >= self.last_success


@dataclass(frozen=True)
class FreezeState:
    """The outcome of the last fsfreeze of the guest owning ``backup_image``."""

    backup_image: str
    guest: str | None
    time: datetime
    may_be_frozen: bool
    message: str | None


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_isoformat(text)


def db_path(state_dir: str) -> str:
    return os.path.join(state_dir, DB_NAME)


class History:
    """One connection to the history database; use as a context manager."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        self.path = db_path(state_dir)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def record_seen(
        self, live_cluster: str, images: Mapping[str, str | None], now: datetime, write: bool = True
    ) -> dict[str, datetime]:
        """Note that ``images`` (live image -> its backup image) exist now; their first-seen times.

        With ``write=False`` (check mode) nothing is recorded: images never seen have no entry.
        """
        if write:
            with self._db:
                for image, backup_image in images.items():
                    self._db.execute(
                        "INSERT INTO seen (live_cluster, image, backup_image, first_seen, last_seen)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (live_cluster, image) DO UPDATE SET"
                        " last_seen = excluded.last_seen, backup_image = excluded.backup_image",
                        (live_cluster, image, backup_image, now.isoformat(), now.isoformat()),
                    )
        rows = self._db.execute("SELECT image, first_seen FROM seen WHERE live_cluster = ?", (live_cluster,))
        return {image: parse_isoformat(first) for image, first in rows if image in images}

    def known_backup_images(self, live_cluster: str) -> dict[str, str]:
        """Backup image -> live image, for every image of ``live_cluster`` ever seen with a backup name."""
        rows = self._db.execute(
            "SELECT backup_image, image FROM seen WHERE live_cluster = ? AND backup_image IS NOT NULL", (live_cluster,)
        )
        return dict(rows)

    def record_transfer(
        self, backup_image: str, image: str, ok: bool, when: datetime, error: str | None = None
    ) -> None:
        """The outcome of one image's transfer (the transfer module, once per image and run)."""
        stamp = when.isoformat()
        with self._db:
            if ok:
                self._db.execute(
                    "INSERT INTO transfers (backup_image, image, last_success, failures) VALUES (?, ?, ?, 0)"
                    " ON CONFLICT (backup_image) DO UPDATE SET last_success = excluded.last_success,"
                    " image = excluded.image, failures = 0",
                    (backup_image, image, stamp),
                )
            else:
                self._db.execute(
                    "INSERT INTO transfers (backup_image, image, last_failure, last_error, failures)"
                    " VALUES (?, ?, ?, ?, 1)"
                    " ON CONFLICT (backup_image) DO UPDATE SET last_failure = excluded.last_failure,"
                    " last_error = excluded.last_error, image = excluded.image, failures = failures + 1",
                    (backup_image, image, stamp, error),
                )

    def record_deferred(self, backup_image: str, image: str, when: datetime) -> None:
        """A backup window kept this image's transfer from starting (kept: the first time it was)."""
        with self._db:
            self._db.execute(
                "INSERT INTO deferred (backup_image, image, at) VALUES (?, ?, ?) ON CONFLICT (backup_image)"
                " DO UPDATE SET image = excluded.image",
                (backup_image, image, when.isoformat()),
            )

    def clear_deferred(self, backup_image: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM deferred WHERE backup_image = ?", (backup_image,))

    def deferred(self) -> dict[str, datetime]:
        """Backup image -> when its transfer was first deferred (still waiting)."""
        rows = self._db.execute("SELECT backup_image, at FROM deferred")
        return {name: datetime.fromisoformat(at) for name, at in rows}

    def record_freeze(self, state: FreezeState) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO freezes (backup_image, guest, time, may_be_frozen, message) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (backup_image) DO UPDATE SET guest = excluded.guest, time = excluded.time,"
                " may_be_frozen = excluded.may_be_frozen, message = excluded.message",
                (state.backup_image, state.guest, state.time.isoformat(), int(state.may_be_frozen), state.message),
            )

    def freeze_states(self, backup_images: Iterable[str]) -> dict[str, FreezeState]:
        wanted = set(backup_images)
        rows = self._db.execute("SELECT backup_image, guest, time, may_be_frozen, message FROM freezes")
        return {
            name: FreezeState(name, guest, parse_isoformat(stamp), bool(flag), message)
            for name, guest, stamp, flag, message in rows
            if name in wanted
        }

    def record_set_aside(
        self, backup_image: str, image: str, snapshots: Iterable[str], when: datetime, detail: str | None = None
    ) -> None:
        """Backup snapshots of ``backup_image`` found unequal to live (and removed, says ``detail``)."""
        with self._db:
            self._db.execute(
                "INSERT INTO set_aside (backup_image, image, at, snapshots, detail) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (backup_image) DO UPDATE SET image = excluded.image, at = excluded.at,"
                " snapshots = excluded.snapshots, detail = excluded.detail",
                (backup_image, image, when.isoformat(), json.dumps(list(snapshots)), detail),
            )

    def transfer_states(self, backup_images: Iterable[str]) -> dict[str, TransferState]:
        wanted = set(backup_images)
        states: dict[str, TransferState] = {}
        rows = self._db.execute("SELECT backup_image, last_success, last_failure, last_error, failures FROM transfers")
        for backup_image, success, failure, error, failures in rows:
            if backup_image in wanted:
                states[backup_image] = TransferState(backup_image, _time(success), _time(failure), error, failures)
        for backup_image, at, snapshots, detail in self._db.execute(
            "SELECT backup_image, at, snapshots, detail FROM set_aside"
        ):
            if backup_image in wanted:
                state = states.get(backup_image) or TransferState(backup_image, None, None, None, 0)
                states[backup_image] = replace(
                    state,
                    set_aside_at=_time(at),
                    set_aside_snapshots=tuple(json.loads(snapshots)),
                    set_aside_detail=detail,
                )
        return states


def _guest_label(plan: Mapping[str, object]) -> str | None:
    guest = plan.get("guest")
    if not isinstance(guest, Mapping):
        return None
    return f"{guest.get('vmid')} ({guest.get('name')})"


def _record(state_dir: str, what: str, write: Callable[[History], None]) -> str | None:
    """Run ``write`` on the state dir's history; an error text naming ``what`` instead of raising
    (the history informs the check: a failure to write it must not fail a backup)."""
    try:
        with History(state_dir) as history:
            write(history)
    except (OSError, sqlite3.Error) as exc:
        return f"cannot record {what} in {db_path(state_dir)}: {exc}"
    return None


def record_freeze_results(state_dir: str, plans: Iterable[Mapping[str, object]], when: datetime) -> str | None:
    """Record each plan's ``freeze`` outcome (Proxmox guests); an error text instead of raising.

    Plans without ``freeze`` (no freeze attempted: plain images, nothing due, containers) change
    nothing: an earlier "may be frozen" stays until a freeze of that guest is confirmed thawed.
    """

    def write(history: History) -> None:
        for plan in plans:
            freeze, backup_image = plan.get("freeze"), plan.get("backup_image")
            if not isinstance(freeze, Mapping) or not isinstance(backup_image, str):
                continue
            message = freeze.get("message")
            history.record_freeze(
                FreezeState(
                    backup_image,
                    _guest_label(plan),
                    when,
                    freeze.get("state") == "may-be-frozen",
                    None if message is None else str(message),
                )
            )

    return _record(state_dir, "the fsfreeze history", write)


def _per_image(results: Iterable[Mapping[str, object]]) -> Iterator[tuple[str, str, Mapping[str, object]]]:
    """(backup image, live image, result) of each module result that names both (others are skipped)."""
    for result in results:
        backup_image, image = result.get("backup_image"), result.get("image")
        if isinstance(backup_image, str) and isinstance(image, str):
            yield backup_image, image, result


def record_transfer_results(state_dir: str, results: Iterable[Mapping[str, object]], when: datetime) -> str | None:
    """Record the per-image results of a transfer module run; an error text instead of raising.

    ``transferred`` counts as a success, ``failed`` as a failure; images with nothing to send,
    planned or locked by another run are not attempts and change nothing. ``deferred`` (a
    backup window ended first) is no attempt either, but is remembered until the next attempt.
    """

    def write(history: History) -> None:
        for backup_image, image, result in _per_image(results):
            status = result.get("status")
            if status == "transferred":
                history.record_transfer(backup_image, image, True, when)
            elif status == "failed":
                history.record_transfer(backup_image, image, False, when, str(result.get("error") or "failed"))
            if status == "deferred":
                history.record_deferred(backup_image, image, when)
            elif status in ("transferred", "failed", "up-to-date"):
                history.clear_deferred(backup_image)

    return _record(state_dir, "the transfer history", write)


def deferred_images(state_dir: str) -> tuple[set[str], str | None]:
    """The backup images the last run deferred, and an error text instead of raising (then none:
    the run goes on in its usual order)."""
    if not os.path.exists(db_path(state_dir)):
        return set(), None  # no run recorded anything here yet
    try:
        with History(state_dir) as history:
            return set(history.deferred()), None
    except (OSError, sqlite3.Error) as exc:
        return set(), f"cannot read the deferred images from {db_path(state_dir)}: {exc}"


def record_set_aside(state_dir: str, results: Iterable[Mapping[str, object]], when: datetime) -> str | None:
    """Record the checksum module's mismatches (its per-image results); an error text instead of raising.

    Each result is a backup image whose snapshot differed from live: ``set_aside`` (the
    snapshots removed; empty when none could be) and ``note`` (what happened).
    """

    def write(history: History) -> None:
        for backup_image, image, result in _per_image(results):
            removed = result.get("set_aside")
            snapshots = [str(name) for name in removed] if isinstance(removed, list) else []
            note = result.get("note") or result.get("error")
            history.record_set_aside(backup_image, image, snapshots, when, str(note) if note else None)

    return _record(state_dir, "the set-aside snapshots", write)
