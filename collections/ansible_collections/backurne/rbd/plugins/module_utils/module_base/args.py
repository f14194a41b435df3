# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Argument-spec fragments shared by the modules, and the conversions from module parameters to
# core objects. Kept here, without an Ansible import, so every module declares an option the
# same way its doc fragment documents it.
from datetime import datetime, timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC, parse_isoformat
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_duration

CEPH_ARGS: dict[str, dict[str, Any]] = {
    "cluster": {"type": "str", "default": "ceph"},
    "ceph_client": {"type": "str", "default": "admin"},
    "keyring": {"type": "path"},
    "ceph_conf": {"type": "path"},
}

POLICY_ARGS: dict[str, dict[str, Any]] = {
    "snap_prefix": {"type": "str", "default": "backup"},
    "profiles": {"type": "dict", "default": {"daily": {"count": 30}}},
    "now": {"type": "str"},
}

# The backup pool alone (doc fragment backurne.rbd.pool_pair.backup_pool), for the modules that
# read one pool.
BACKUP_POOL_ARGS: dict[str, dict[str, Any]] = {
    "pool": {"type": "str", "default": "rbd"},
    "namespace": {"type": "str"},
}

# The backup pool and the live pool, for the modules on a backup node that read both sides.
POOL_PAIR_ARGS: dict[str, dict[str, Any]] = {
    **BACKUP_POOL_ARGS,
    "source_pool": {"type": "str", "default": "rbd"},
    "source_namespace": {"type": "str"},
}

# A batch worked through by a pool of workers (doc fragment backurne.rbd.batch). A module with
# another default for workers overrides it in its own spec and DOCUMENTATION.
BATCH_ARGS: dict[str, dict[str, Any]] = {
    "workers": {"type": "int", "default": 4},
    "fail_on_error": {"type": "bool", "default": True},
}

# Several backup nodes splitting one batch (doc fragment backurne.rbd.shard).
SHARD_ARGS: dict[str, dict[str, Any]] = {
    "shard_index": {"type": "int", "default": 0},
    "shard_count": {"type": "int", "default": 1},
}

# The data stream between the clusters (doc fragment backurne.rbd.stream): transfer and restore.
STREAM_ARGS: dict[str, dict[str, Any]] = {
    "compression": {"type": "bool", "default": True},
    "compression_level": {"type": "int", "default": 1},
    "compression_threads": {"type": "int", "default": 0},
    "timeout": {"type": "int", "default": 21600},
    "stall_timeout": {"type": "int", "default": 300},
    "bwlimit": {"type": "str"},
    "bwlimit_node": {"type": "str"},
}

# The per-image advisory lock on a backup image (doc fragment backurne.rbd.lock).
LOCK_ARGS: dict[str, dict[str, Any]] = {
    "lock_ttl": {"type": "str", "default": "6h"},
}

SSH_ARGS: dict[str, dict[str, Any]] = {
    "live_host": {"type": "str", "required": True},
    "live_ceph": {"type": "dict", "default": {}, "options": CEPH_ARGS},
    "ssh_user": {"type": "str", "default": "root"},
    "ssh_port": {"type": "int", "default": 22},
    "ssh_identity_file": {"type": "path"},
    "ssh_known_hosts_file": {"type": "path"},
    "ssh_cipher": {"type": "str"},
    "ssh_control_master": {"type": "bool", "default": True},
}


BACKUP_NODE = "the backup node"


def live_cluster_owner(name: str | None) -> str:
    return f"live cluster {name}" if name else "the live cluster"


def ceph_access(params: dict[str, Any], owner: str | None = None) -> CephAccess:
    """The Ceph access options of a module's parameters (its own, or its `live_ceph` dict).

    ``owner`` names whose options they are in error messages ("keyring /x (option keyring of
    the backup node) does not exist"). By default: a module's own options are the backup
    node's (every module but the live-side ones, which say so), a `live_ceph` dict (it has
    no `pool`) the live cluster's. A local runner checks the files exist before its first
    command (RbdRunner.file_problem).
    """
    if owner is None:
        owner = BACKUP_NODE if "pool" in params or "live_host" in params else live_cluster_owner(None)
    return CephAccess(
        cluster=params.get("cluster") or "ceph",
        ceph_client=params.get("ceph_client") or "admin",
        keyring=params.get("keyring"),
        ceph_conf=params.get("ceph_conf"),
        owner=owner,
    )


def live_ssh_target(params: dict[str, Any]) -> SshTarget:
    return SshTarget(
        host=params["live_host"],
        user=params["ssh_user"],
        port=params["ssh_port"],
        identity_file=params.get("ssh_identity_file"),
        known_hosts_file=params.get("ssh_known_hosts_file"),
        cipher=params.get("ssh_cipher"),
        control_master=params["ssh_control_master"],
    )


def parse_duration_or_zero(value: str) -> timedelta:
    """A duration option where 0 is legitimate (policy.parse_duration refuses 0: a zero interval is a mistake)."""
    return timedelta(0) if value.strip() in ("0", "") else parse_duration(value)


def parse_now(value: str | None) -> datetime:
    """The policy clock: naive UTC, as in the snapshot names; injectable for tests and dry runs.

    A value that is not an ISO 8601 time raises ValueError naming the playbook variable that
    sets it (backurne_now) and the value.
    """
    if not value:
        return datetime.now(UTC).replace(tzinfo=None)
    try:
        parsed = parse_isoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"backurne_now {value!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00 or 2026-01-31T12:00:00+01:00)"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed
