# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The check module's job: one listing per live pool and one of the backup pool, the history
# database, `rbd info` for the images without a backup, and the findings of report/health.py
# turned into a Nagios status. Findings never fail it; an unreadable cluster is UNKNOWN.
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_duration_or_zero
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    HOLD_KEY_PREFIX,
    held_now,
    holds_from_metadata,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NO_COMMENT,
    NamingError,
    backup_image_name_for_plain,
    parse_backup_image_name,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    Profile,
    parse_duration,
    parse_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.selection import selected
from ansible_collections.backurne.rbd.plugins.module_utils.report.health import (
    Finding,
    check_faded,
    check_images,
    nagios_line,
    nagios_summary,
    parse_ctime,
    unknown_line,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import FreezeState, History, TransferState
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir

NAME = "check"
Listing = dict[str, list[str]]


@dataclass
class ExpectedImages:
    """The images a Proxmox run expects on this cluster and endpoint: live image -> (pool,
    namespace, backup image), the backup images expected elsewhere, and the images' own profiles."""

    images: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)
    elsewhere: set[str] = field(default_factory=set)
    own_profiles: dict[str, dict[str, Profile]] = field(default_factory=dict)


def parse_expected(
    items: list[dict[str, Any]], live_cluster: str, endpoint: str | None, source_pool: str, source_ns: str | None
) -> ExpectedImages:
    """The ``expected`` option, checked; ModuleFailure names the item at fault."""
    expected = ExpectedImages()
    for index, item in enumerate(items):
        image, name = item.get("image"), item.get("backup_image")
        if not isinstance(image, str) or not isinstance(name, str) or parse_backup_image_name(name) is None:
            raise ModuleFailure(
                f"{NAME}: expected[{index}]: needs an image and a backup_image IDENT;DISK;COMMENT, got {item!r}"
            )
        if item.get("live_cluster") not in (None, live_cluster) or (
            endpoint is not None and item.get("endpoint") != endpoint
        ):
            expected.elsewhere.add(name)
            continue
        pool = item.get("pool") or source_pool
        namespace = item.get("namespace") if item.get("pool") else (item.get("namespace") or source_ns)
        try:
            ImageSpec(pool, namespace, image)
        except ValueError as exc:
            raise ModuleFailure(f"{NAME}: expected[{index}]: {exc}") from exc
        if expected.images.get(image, (pool, namespace, name)) != (pool, namespace, name):
            raise ModuleFailure(f"{NAME}: expected: image {image!r} is listed twice, differently")
        expected.images[image] = (pool, namespace, name)
        if item.get("profiles"):
            try:
                expected.own_profiles[image] = parse_profiles(item["profiles"])
            except (PolicyError, TypeError, AttributeError) as exc:
                raise ModuleFailure(f"{NAME}: expected[{index}] ({image}): profiles: {exc}") from exc
    return expected


def live_utc_offset(live: RbdRunner) -> timedelta:
    """The live node's UTC offset: `rbd info` prints its local time. UTC when it cannot be read."""
    try:
        out = live.run_pipeline([["date", "+%z"]], timeout=30, action="date").strip()
    except RbdError:
        return timedelta(0)
    try:
        sign = -1 if out.startswith("-") else 1
        return sign * timedelta(hours=int(out[1:3]), minutes=int(out[3:5]))
    except (ValueError, IndexError):
        return timedelta(0)


@dataclass(frozen=True)
class HealthSettings:
    """The check's options, validated."""

    live_cluster: str
    pool: str
    namespace: str | None
    source_pool: str
    source_namespace: str | None
    prefix: str
    profiles: dict[str, Profile]
    now: datetime
    include: list[str]
    exclude: list[str]
    grace_factor: float
    expiry_grace: timedelta
    extra_retention: timedelta
    keep_min: int
    history_dir: str | None  # None: no history database
    check_mode: bool


def health_settings(
    params: Mapping[str, Any], prefix: str, profiles: dict[str, Profile], now: datetime, check_mode: bool
) -> HealthSettings:
    """The check's own options, checked (the policy ones come validated); ModuleFailure names the bad one."""
    try:
        expiry_grace = parse_duration(params["expiry_grace"])
        extra_retention = parse_duration_or_zero(params["extra_retention_time"])
    except (PolicyError, ValueError) as exc:
        raise ModuleFailure(f"{NAME}: {exc}") from exc
    if not params["grace_factor"] >= 1:
        raise ModuleFailure(f"{NAME}: grace_factor must be at least 1, got {params['grace_factor']}")
    if params["keep_min"] < 0:
        raise ModuleFailure(f"{NAME}: keep_min must be at least 0, got {params['keep_min']}")
    try:
        backup_image_name_for_plain(params["live_cluster"], "x")
    except NamingError as exc:
        raise ModuleFailure(f"{NAME}: live_cluster: {exc}") from exc
    return HealthSettings(
        live_cluster=params["live_cluster"],
        pool=params["pool"],
        namespace=params["namespace"],
        source_pool=params["source_pool"],
        source_namespace=params["source_namespace"],
        prefix=prefix,
        profiles=profiles,
        now=now,
        include=params["include"],
        exclude=params["exclude"],
        grace_factor=params["grace_factor"],
        expiry_grace=expiry_grace,
        extra_retention=extra_retention,
        keep_min=params["keep_min"],
        history_dir=state_dir(params["state_dir"]) if params["history"] else None,
        check_mode=check_mode,
    )


class _Unknown(Exception):
    """A cluster could not be read: the result is UNKNOWN (status 3), not a failure."""


@dataclass
class _History:
    first_seen: dict[str, datetime] = field(default_factory=dict)
    transfers: dict[str, TransferState] = field(default_factory=dict)
    freezes: dict[str, FreezeState] = field(default_factory=dict)
    known_backups: dict[str, str] = field(default_factory=dict)


@dataclass
class HealthCheckJob:
    """Check one live cluster's backups; ``run()`` returns the module's result."""

    live: RbdRunner
    backup: RbdRunner
    settings: HealthSettings
    expected: ExpectedImages | None  # None: the live pool is listed, backups named CLUSTER;IMAGE;None
    warn: Callable[[str], None]
    # Backup image -> its snapshots held now (read with the backup listing): kept on purpose.
    held: dict[str, set[str]] = field(default_factory=dict, init=False)

    def run(self) -> dict[str, Any]:
        try:
            return self._check()
        except _Unknown as exc:
            status, line = unknown_line(f"{self.settings.live_cluster}: {exc}")
            return {
                "changed": False,
                "findings": [],
                "status": status,
                "line": line,
                "summary": line.split(" - ", 1)[1],
                "checked": 0,
            }

    def _pools(self) -> list[tuple[str, str]]:
        if self.expected is not None:
            return sorted({(pool, namespace or "") for pool, namespace, _backup in self.expected.images.values()})
        return [(self.settings.source_pool, self.settings.source_namespace or "")]

    def _listings(self, pools: list[tuple[str, str]]) -> tuple[dict[tuple[str, str], Listing], Listing]:
        """One listing per live pool and one of the backup pool for the whole cluster."""
        live_listings: dict[tuple[str, str], Listing] = {}
        for pool, namespace in pools:
            try:
                live_listings[(pool, namespace)] = self.live.list_images(pool, namespace or None)
            except (RbdError, ValueError) as exc:
                raise _Unknown(f"cannot list the live images: {exc}") from exc
        try:
            backup_listing, metas = self.backup.list_images_with_meta(
                self.settings.pool, self.settings.namespace, HOLD_KEY_PREFIX
            )
        except (RbdError, ValueError) as exc:
            raise _Unknown(f"cannot list the backup images: {exc}") from exc
        # Held snapshots are kept on purpose: never "not expired in time".
        self.held = {image: held_now(holds_from_metadata(meta), self.settings.now) for image, meta in metas.items()}
        return live_listings, backup_listing

    def _selected_images(
        self, live_listings: dict[tuple[str, str], Listing], pools: list[tuple[str, str]]
    ) -> tuple[dict[str, tuple[str, str | None]], Listing]:
        """(live image -> its pool and namespace, live image -> its snapshots) of the images checked."""
        s = self.settings
        if self.expected is not None:
            where = {image: (pool, namespace) for image, (pool, namespace, _backup) in self.expected.images.items()}
            live_snapshots = {
                image: live_listings[(pool, namespace or "")].get(image, [])
                for image, (pool, namespace, _backup) in self.expected.images.items()
                if selected(image, s.include, s.exclude)
            }
            return where, live_snapshots
        listing = live_listings[pools[0]]
        where = {image: (s.source_pool, s.source_namespace) for image in listing}
        return where, {image: snaps for image, snaps in listing.items() if selected(image, s.include, s.exclude)}

    def backup_name(self, image: str) -> str | None:
        if self.expected is not None:
            return self.expected.images[image][2]
        try:
            return backup_image_name_for_plain(self.settings.live_cluster, image)
        except NamingError:
            return None

    def _history(self, images: Listing) -> _History:
        """First sight of each image, last transfer outcomes (written by the transfer module)."""
        found = _History()
        if self.settings.history_dir is None:
            return found
        names = [name for name in map(self.backup_name, images) if name]
        try:
            with History(self.settings.history_dir) as history:
                found.first_seen = history.record_seen(
                    self.settings.live_cluster,
                    {image: self.backup_name(image) for image in images},
                    self.settings.now,
                    write=not self.settings.check_mode,
                )
                found.transfers = history.transfer_states(names)
                found.freezes = history.freeze_states(names)
                found.known_backups = history.known_backup_images(self.settings.live_cluster)
        except (OSError, sqlite3.Error) as exc:
            self.warn(f"check: history database unusable, checking without it: {exc}")
        return found

    def _live_created(
        self, images: Listing, backup_listing: Listing, where: Mapping[str, tuple[str, str | None]]
    ) -> dict[str, datetime | None]:
        """`rbd info` only for the images with no backup: the young-image exemption needs their age."""

        def has_backup(image: str) -> bool:
            name = self.backup_name(image)
            if name is None:
                return True  # reported as not backupable; its age does not matter
            return any(snap.startswith(f"{self.settings.prefix};") for snap in backup_listing.get(name, []))

        live_created: dict[str, datetime | None] = {}
        missing = [image for image in sorted(images) if not has_backup(image)]
        offset = live_utc_offset(self.live) if missing else timedelta(0)
        for image in missing:
            pool, namespace = where[image]
            try:
                info: Any = self.live.image_info(ImageSpec(pool, namespace, image))
            except RbdError as exc:
                if exc.rc == 255:  # ssh itself failed: the live node is gone, not the image
                    raise _Unknown(f"cannot read the live images: {exc}") from exc
                live_created[image] = None  # removed meanwhile, or unreadable: counts as old
                continue
            created = parse_ctime(info.get("create_timestamp") if isinstance(info, dict) else None)
            live_created[image] = None if created is None else created - offset
        return live_created

    def _gone(self, present: Listing, backup_listing: Listing, known_backups: Mapping[str, str]) -> Listing:
        """Backup images of this cluster whose live image is gone."""
        if self.expected is None:
            return {
                name: snaps
                for name, snaps in backup_listing.items()
                if (parsed := parse_backup_image_name(name)) is not None
                and parsed.ident == self.settings.live_cluster
                and parsed.comment == NO_COMMENT
                and parsed.disk not in present
            }
        still = {names[2] for names in self.expected.images.values()} | self.expected.elsewhere
        return {name: backup_listing[name] for name in known_backups if name not in still and name in backup_listing}

    def _check(self) -> dict[str, Any]:
        s = self.settings
        pools = self._pools()
        live_listings, backup_listing = self._listings(pools)
        where, live_snapshots = self._selected_images(live_listings, pools)
        history = self._history(live_snapshots)
        live_created = self._live_created(live_snapshots, backup_listing, where)
        present = live_listings[pools[0]] if self.expected is None else {}
        gone = self._gone(present, backup_listing, history.known_backups)
        own_profiles = self.expected.own_profiles if self.expected is not None else {}
        backup_names = (
            {image: names[2] for image, names in self.expected.images.items()} if self.expected is not None else None
        )
        # Images with their own profiles are checked against those, in groups of equal profiles.
        groups: dict[str, tuple[dict[str, Profile], list[str]]] = {}
        for image in live_snapshots:
            own = own_profiles.get(image, s.profiles)
            groups.setdefault(repr(sorted(own.items())), (own, []))[1].append(image)
        every_profile = dict(s.profiles)
        for own in own_profiles.values():
            every_profile.update(own)
        findings: list[Finding] = []
        try:
            for group_profiles, group in groups.values():
                findings += check_images(
                    {image: live_snapshots[image] for image in group},
                    live_created,
                    backup_listing,
                    s.live_cluster,
                    group_profiles,
                    s.prefix,
                    s.now,
                    grace_factor=s.grace_factor,
                    expiry_grace=s.expiry_grace,
                    keep_min=s.keep_min,
                    backup_names=backup_names,
                    first_seen=history.first_seen,
                    transfers=history.transfers,
                    freezes=history.freezes,
                    held=self.held,
                )
            findings.sort(key=lambda finding: finding.image)  # stable: each image's own order stays
            findings += check_faded(
                gone, s.live_cluster, every_profile, s.prefix, s.now, s.extra_retention, s.expiry_grace
            )
        except (PolicyError, NamingError) as exc:
            raise ModuleFailure(f"{NAME}: {exc}") from exc
        status, line = nagios_line(findings, len(live_snapshots))
        return {
            "changed": False,
            "findings": [finding.to_dict() for finding in findings],
            "status": status,
            "line": line,
            "summary": nagios_summary(findings, len(live_snapshots)),
            "checked": len(live_snapshots),
        }
