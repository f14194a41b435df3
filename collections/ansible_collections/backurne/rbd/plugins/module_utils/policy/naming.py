# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Names on disk, compatible with backurne 2.x.

Snapshot, identical on live and backup: ``PREFIX;PROFILE;COUNT;ISOTIME``.
Backup image on the backup pool: ``IDENT;DISK;COMMENT``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import parse_isoformat

# ';' separates the fields, quotes broke backurne 2.x's ssh-quoted commands, and
# the rbd CLI would read '/' and '@' as pool and snapshot separators.
_TOKEN_FORBIDDEN = ";'\"/@"
# Quotes are legal in RBD image names and harmless in argument lists.
_IMAGE_FIELD_FORBIDDEN = ";/@"
_SPEC_FORBIDDEN = "/@"

_COUNT_RE = re.compile(r"[1-9][0-9]*")
# Only what isoformat() of a naive datetime writes (microseconds are omitted when
# zero), so that a lookalike name is never mistaken for ours.
_ISOTIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?")

# backurne 2.x wrote str(None) when a backup image had no comment.
NO_COMMENT = "None"


class NamingError(ValueError):
    """A name cannot be built; the message names the offending value."""


def _check_field(kind: str, value: object, forbidden: str) -> str:
    if not isinstance(value, str):
        raise NamingError(f"{kind} must be a string, got {value!r}")
    if not value:
        raise NamingError(f"{kind} must not be empty")
    for char in value:
        if char in forbidden:
            raise NamingError(f"{kind} {value!r} contains the forbidden {char!r}")
        if unicodedata.category(char) == "Cc":
            raise NamingError(f"{kind} {value!r} contains a control character")
    return value


def _check_token(kind: str, value: object) -> str:
    token = _check_field(kind, value, _TOKEN_FORBIDDEN)
    # Edge blanks are invisible in `rbd snap ls` output and in YAML.
    if token != token.strip():
        raise NamingError(f"{kind} {token!r} has leading or trailing whitespace")
    return token


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can head our snapshot names, else raise NamingError."""
    return _check_token("snapshot prefix", prefix)


def validate_profile_name(profile: str) -> str:
    """Return ``profile`` if it can be the PROFILE field of a snapshot name."""
    return _check_token("profile name", profile)


def _check_count(count: object) -> None:
    # bool is an int subclass; True as a retention count is always a mistake.
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise NamingError(f"snapshot count must be an integer >= 1, got {count!r}")


def _check_created(created: object) -> None:
    if not isinstance(created, datetime):
        raise NamingError(f"snapshot time must be a datetime, got {created!r}")
    # Names carry no offset: an aware time would be misread by whoever parses it.
    if created.tzinfo is not None:
        raise NamingError(f"snapshot time {created.isoformat()} must be naive UTC, not aware")


@dataclass(frozen=True)
class SnapName:
    """A parsed ``PREFIX;PROFILE;COUNT;ISOTIME`` snapshot name.

    ``name`` always renders microseconds. A backurne 2.x name written without
    them parses, but renders differently: code acting on existing snapshots must
    keep the name found on disk (policy.Snap does).
    """

    prefix: str
    profile: str
    count: int
    created: datetime

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_profile_name(self.profile)
        _check_count(self.count)
        _check_created(self.created)

    @property
    def name(self) -> str:
        isotime = self.created.isoformat(timespec="microseconds")
        return f"{self.prefix};{self.profile};{self.count};{isotime}"


def make_snap_name(prefix: str, profile: str, count: int, created: datetime) -> str:
    """The name of a new backup snapshot; NamingError names any invalid part."""
    return SnapName(prefix, profile, count, created).name


def parse_snap_name(name: str, prefix: str) -> SnapName | None:
    """Parse one of our snapshot names; None for anything that is not ours.

    Only an invalid ``prefix`` raises (a configuration error): a name that does
    not parse is foreign, to be left alone rather than reported as an error.
    """
    validate_prefix(prefix)
    if not isinstance(name, str) or not name.startswith(f"{prefix};"):
        return None
    fields = name.split(";")
    if len(fields) != 4:
        return None
    _prefix, profile, count, isotime = fields
    if not _COUNT_RE.fullmatch(count) or not _ISOTIME_RE.fullmatch(isotime):
        return None
    try:
        return SnapName(prefix, profile, int(count), parse_isoformat(isotime))
    except ValueError:
        # An impossible date (month 13), or a profile we could never have written.
        return None


@dataclass(frozen=True)
class BackupImageName:
    """A parsed ``IDENT;DISK;COMMENT`` backup image name."""

    ident: str
    disk: str
    comment: str

    @property
    def name(self) -> str:
        return f"{self.ident};{self.disk};{self.comment}"


def _image_field(kind: str, value: object) -> str:
    try:
        return _check_field(kind, value, _IMAGE_FIELD_FORBIDDEN)
    except NamingError as exc:
        raise NamingError(f"{exc}: a backup image name IDENT;DISK;COMMENT cannot hold it") from None


def backup_image_name_for_plain(cluster: str, image: str) -> str:
    """``CLUSTER;IMAGE;None``, the backup image of a plain cluster's image."""
    ident = _image_field("cluster name", cluster)
    disk = _image_field("image", image)
    return BackupImageName(ident, disk, NO_COMMENT).name


def backup_image_name_for_proxmox(ident: str, disk: str, vmname: str | None) -> str:
    """``IDENT;DISK;VMNAME`` for a Proxmox guest disk.

    As in backurne 2.x, ``ident`` is the smbios uuid (``use_smbios``) or the
    storage name, and ``disk`` the adapter (``scsi0``) or the RBD image name.
    """
    comment = NO_COMMENT if vmname is None else _image_field("VM name", vmname)
    return BackupImageName(_image_field("ident", ident), _image_field("disk", disk), comment).name


def parse_backup_image_name(name: str) -> BackupImageName | None:
    """Parse a backup image name; None for a foreign image, never to be touched."""
    if not isinstance(name, str):
        return None
    fields = name.split(";")
    if len(fields) != 3:
        return None
    ident, disk, comment = fields
    if not ident or not disk:
        return None
    return BackupImageName(ident, disk, comment)


def image_spec(pool: str, namespace: str | None, image: str, snap: str | None = None) -> str:
    """``pool[/namespace]/image[@snap]``, one argument of the rbd CLI."""
    _check_field("pool", pool, _SPEC_FORBIDDEN)
    # A leading dash would make the rbd CLI take the whole spec for an option.
    if pool.startswith("-"):
        raise NamingError(f"pool {pool!r} must not start with '-'")
    parts = [pool]
    # RBD's default namespace is the empty string: both spellings mean none.
    if namespace:
        parts.append(_check_field("namespace", namespace, _SPEC_FORBIDDEN))
    parts.append(_check_field("image", image, _SPEC_FORBIDDEN))
    spec = "/".join(parts)
    if snap is not None:
        spec += "@" + _check_field("snapshot", snap, _SPEC_FORBIDDEN)
    return spec
