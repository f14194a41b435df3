# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Monitoring (backurne's check, Nagios conventions): is every live image protected?

Pure: snapshot listings and creation times in, findings and one status line out. ``now``
is naive UTC, as everywhere in the policy.

An image is "new" (not yet expected to have a backup) while its age is below the shortest
profile interval times the grace factor: Ceph's own creation time of the live image when known,
else the first time the check saw it (history.py keeps that between runs). The history also
says whether an image's last transfer failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, backup_image_name_for_plain
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    Profile,
    Snap,
    newest_shared,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import FreezeState, TransferState

Severity = Literal["critical", "warning"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# Nagios keeps the first 4 KiB of a plugin's output; one screen line is friendlier.
MAX_DETAILS = 5
MAX_LINE = 600

_CTIME_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Finding:
    """One problem of one live image; ``cluster`` names its live cluster in the status line."""

    image: str
    severity: Severity
    code: str
    message: str
    cluster: str = ""

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.image}" if self.cluster else self.image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_age(delta: timedelta) -> str:
    """``2d3h``, ``5h10m``, ``42m``, ``30s``: short and readable in a status line."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def parse_ctime(text: object) -> datetime | None:
    """Ceph's ``create_timestamp`` (``Sun Nov 29 18:51:43 2026``, ctime style); None if unparsable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(_CTIME_RE.sub(" ", text.strip()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None


def _ours(names: Iterable[str], prefix: str) -> list[Snap]:
    # Listings are in Ceph's creation order and stay so: the last is the newest, whatever its
    # name's time says (backurne 2.x wrote local time); ages still come from the names.
    return [snap for snap in (Snap.from_name(name, prefix) for name in names) if snap is not None]


def _check_inputs(profiles: Mapping[str, Profile], now: object, grace_factor: float, expiry_grace: object) -> None:
    if not profiles:
        raise PolicyError("at least one backup profile must be defined")
    if not isinstance(now, datetime) or now.tzinfo is not None:
        raise PolicyError(f"now must be a naive UTC datetime, got {now!r}")
    if isinstance(grace_factor, bool) or not isinstance(grace_factor, (int, float)) or not grace_factor >= 1:
        raise PolicyError(f"grace_factor must be a number >= 1, got {grace_factor!r}")
    if not isinstance(expiry_grace, timedelta) or expiry_grace < timedelta(0):
        raise PolicyError(f"expiry_grace must be a duration >= 0, got {expiry_grace!r}")


def check_images(
    live_snapshots: Mapping[str, Iterable[str]],
    live_created: Mapping[str, datetime | None],
    backup_snapshots: Mapping[str, Iterable[str]],
    cluster: str,
    profiles: Mapping[str, Profile],
    prefix: str,
    now: datetime,
    grace_factor: float = 1.25,
    expiry_grace: timedelta = timedelta(days=1),
    keep_min: int = 1,
    backup_names: Mapping[str, str] | None = None,
    first_seen: Mapping[str, datetime] | None = None,
    transfers: Mapping[str, TransferState] | None = None,
    freezes: Mapping[str, FreezeState] | None = None,
    held: Mapping[str, Iterable[str]] | None = None,
) -> list[Finding]:
    """Findings for every live image of ``cluster``, in image order.

    ``backup_names`` (live image -> backup image) replaces the plain naming ``CLUSTER;IMAGE;None``
    (Proxmox guests); ``first_seen`` and ``transfers`` (keyed by backup image) come from the
    history database.

    - critical ``transfer-failed``: the image's latest transfer attempt failed (``transfers``).
    - critical ``may-be-frozen``: the last fsfreeze of the image's Proxmox guest was not confirmed
      undone (``freezes``, keyed by backup image): the guest may still be frozen.
    - critical ``checksum-mismatch``: a backup snapshot was found unequal to live (checksum module)
      and set aside, and no transfer of the image has succeeded since (``transfers``).
    - critical ``no-backup``: no backup image, or none of our snapshots on it, unless the live
      image is younger than the shortest interval x ``grace_factor``: its age is counted from
      ``live_created`` (Ceph's create time), or when unknown from ``first_seen``; unknown in
      both counts as old.
    - critical ``no-shared-snapshot``: no snapshot on both sides, the next backup is a full one.
    - critical ``too-old``: per profile, its newest backup snapshot is older than its interval x
      ``grace_factor``; a profile without any snapshot counts from the image's oldest backup.
    - warning ``not-expired``: backup snapshots of ours still present ``expiry_grace`` past their
      expiry, except those retention keeps on purpose (the newest shared one and those after
      it, the newest ``max(keep_min, 1)``, the snapshots ``held`` now, by backup image: holds).

    Listings are in Ceph's creation order: "newest" is the last one listed, its age the time
    in its name.
    """
    _check_inputs(profiles, now, grace_factor, expiry_grace)
    shortest = min(profile.interval for profile in profiles.values()) * grace_factor
    findings: list[Finding] = []

    def add(image: str, severity: Severity, code: str, message: str) -> None:
        findings.append(Finding(image, severity, code, message, cluster))

    for image in sorted(live_snapshots):
        live_names = list(live_snapshots[image])
        try:
            if backup_names is not None:
                backup_image = backup_names[image]
            else:
                backup_image = backup_image_name_for_plain(cluster, image)
        except NamingError as exc:
            add(image, "critical", "no-backup", f"cannot be backed up: {exc}")
            continue
        state = (transfers or {}).get(backup_image)
        if state is not None and state.failing and state.last_failure is not None and state.last_failure <= now:
            error = " ".join(str(state.last_error or "unknown error").split())
            if len(error) > 160:
                error = error[:157] + "..."
            in_row = f", {state.failures} in a row" if state.failures > 1 else ""
            add(
                image,
                "critical",
                "transfer-failed",
                f"last transfer failed {format_age(now - state.last_failure)} ago{in_row}: {error}",
            )
        freeze = (freezes or {}).get(backup_image)
        if freeze is not None and freeze.may_be_frozen and freeze.time <= now:
            add(image, "critical", "may-be-frozen", _frozen_message(freeze, now))
        if state is not None and state.healing and state.set_aside_at is not None and state.set_aside_at <= now:
            add(image, "critical", "checksum-mismatch", _set_aside_message(state, state.set_aside_at, now))
        backup_snap_names = list(backup_snapshots.get(backup_image, ()))
        backup = _ours(backup_snap_names, prefix)

        if not backup:
            created = live_created.get(image)
            seen = (first_seen or {}).get(image)
            born, how = (created, "created") if created is not None else (seen, "first seen")
            if born is not None and now - born < shortest:
                continue  # its first backup window has not passed yet
            age = f" ({how} {format_age(now - born)} ago)" if born is not None else ""
            if backup_image in backup_snapshots:
                add(image, "critical", "no-backup", f"no backup: {backup_image} has no {prefix} snapshot{age}")
            else:
                add(image, "critical", "no-backup", f"no backup{age}")
            continue

        shared = newest_shared(live_names, backup_snap_names, prefix)
        if shared is None:
            add(image, "critical", "no-shared-snapshot", "no snapshot shared with backup: next backup is a full one")

        oldest = backup[0]
        for profile in profiles.values():
            limit = profile.interval * grace_factor
            of_profile = [snap for snap in backup if snap.profile == profile.name]
            if of_profile:
                age = now - of_profile[-1].created
                if age > limit:
                    add(
                        image,
                        "critical",
                        "too-old",
                        f"newest {profile.name} backup {format_age(age)} old (limit {format_age(limit)})",
                    )
            elif now - oldest.created > limit:
                add(
                    image,
                    "critical",
                    "too-old",
                    f"no {profile.name} backup, backed up for {format_age(now - oldest.created)} "
                    f"(limit {format_age(limit)})",
                )

        kept = {snap.name for snap in backup[-max(keep_min, 1) :]} | set((held or {}).get(backup_image, ()))
        if shared is not None:
            # Retention keeps the newest shared one and whatever follows it on backup.
            names = [snap.name for snap in backup]
            kept.update(names[names.index(shared.name) :])
        late = []
        for snap in backup:
            expires = snap.expires_at(profiles)
            if expires is None or snap.name in kept:
                continue
            try:
                overdue = now > expires + expiry_grace
            except OverflowError:
                overdue = False
            if overdue:
                late.append((snap, expires))
        if late:
            snap, expires = late[0]
            add(
                image,
                "warning",
                "not-expired",
                f"{len(late)} backup snapshot(s) not expired in time, oldest {snap.name} "
                f"expired {format_age(now - expires)} ago",
            )
    return findings


def _frozen_message(freeze: FreezeState, now: datetime) -> str:
    detail = " ".join(str(freeze.message or "thaw not confirmed").split())
    if len(detail) > 200:
        detail = detail[:197] + "..."
    guest = f"guest {freeze.guest}" if freeze.guest else "its guest"
    return f"{guest} may be frozen (fsfreeze {format_age(now - freeze.time)} ago): {detail}"


def _set_aside_message(state: TransferState, at: datetime, now: datetime) -> str:
    when = f"at {at.isoformat(timespec='seconds')} UTC ({format_age(now - at)} ago)"
    if state.set_aside_snapshots:
        names = ", ".join(state.set_aside_snapshots)
        return f"backup snapshot {names} removed after a checksum mismatch {when}; the next backup re-sends it"
    detail = " ".join(str(state.set_aside_detail or "").split())
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return f"backup snapshot differed from live {when}, not removed: {detail}"


def check_faded(
    gone: Mapping[str, Iterable[str]],
    cluster: str,
    profiles: Mapping[str, Profile],
    prefix: str,
    now: datetime,
    extra_retention_time: timedelta = timedelta(0),
    expiry_grace: timedelta = timedelta(days=1),
) -> list[Finding]:
    """Findings for the backup images whose live image is gone (``gone``: backup image -> snapshots).

    Retention keeps such an image until its newest snapshot's expiry + ``extra_retention_time``
    (then removes it): fine until then. Critical ``faded-out`` when it is still there
    ``expiry_grace`` later, or when it holds none of our snapshots (nothing to restore, and
    nothing retention would ever expire). An image whose newest snapshot never expires (its
    profile is not configured) is kept on purpose: not reported.
    """
    findings: list[Finding] = []
    for backup_image in sorted(gone):
        ours = _ours(gone[backup_image], prefix)
        if not ours:
            findings.append(
                Finding(backup_image, "critical", "faded-out", "source image gone and no backup snapshot left", cluster)
            )
            continue
        expires = ours[-1].expires_at(profiles)
        if expires is None:
            continue
        try:
            fade_out_at = expires + extra_retention_time
            overdue = now > fade_out_at + expiry_grace
        except OverflowError:
            continue
        if overdue:
            findings.append(
                Finding(
                    backup_image,
                    "critical",
                    "faded-out",
                    f"source image gone, kept {format_age(now - fade_out_at)} past its removal time "
                    f"(newest snapshot expiry + extra_retention_time)",
                    cluster,
                )
            )
    return findings


def status_of(findings: Iterable[Finding]) -> int:
    severities = {finding.severity for finding in findings}
    if "critical" in severities:
        return CRITICAL
    if "warning" in severities:
        return WARNING
    return OK


def nagios_summary(findings: list[Finding], checked_count: int, max_details: int = MAX_DETAILS) -> str:
    """``2 critical, 1 warning of 14 images: live/db1 no backup; ...`` (counts are images)."""
    critical = {f.label for f in findings if f.severity == "critical"}
    warning = {f.label for f in findings if f.severity == "warning"}
    noun = "image" if checked_count == 1 else "images"
    if not findings:
        return f"{checked_count} {noun} checked"
    ordered = sorted(findings, key=lambda f: (f.severity != "critical", f.label, f.code))
    details = [f"{f.label} {f.message}" for f in ordered[:max_details]]
    if len(ordered) > max_details:
        details.append(f"and {len(ordered) - max_details} more")
    return f"{len(critical)} critical, {len(warning)} warning of {checked_count} {noun}: " + "; ".join(details)


def nagios_line(findings: list[Finding], checked_count: int, max_length: int = MAX_LINE) -> tuple[int, str]:
    """(exit code, one status line): 0 OK, 1 WARNING, 2 CRITICAL."""
    status = status_of(findings)
    line = f"BACKURNE {STATUS_NAMES[status]} - {nagios_summary(findings, checked_count)}"
    if len(line) > max_length:
        line = line[: max_length - 3].rstrip() + "..."
    return status, line


def unknown_line(error: str, max_length: int = MAX_LINE) -> tuple[int, str]:
    """(3, line) for a check that could not be made (cluster unreachable...)."""
    line = f"BACKURNE UNKNOWN - {' '.join(str(error).split())}"
    if len(line) > max_length:
        line = line[: max_length - 3].rstrip() + "..."
    return UNKNOWN, line
