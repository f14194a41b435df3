# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Validation of a whole run's configuration (inventory variables), so a playbook fails before
# touching anything and the message names the culprit.
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, validate_prefix
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, parse_profiles


class ConfigError(ValueError):
    pass


CEPH_KEYS = {"cluster", "ceph_client", "keyring", "ceph_conf"}
SSH_KEYS = {"user", "port", "identity_file", "known_hosts_file", "cipher", "control_master"}
LIVE_KEYS = {"name", "type", "pool", "namespace", "include", "exclude", "ceph", "workers", "proxmox", "ceph_endpoint"}
# Options of a `type: proxmox` live cluster (API access named as community.proxmox names it).
PROXMOX_KEYS = {
    "api_host",
    "api_port",
    "api_user",
    "api_password",
    "api_token_id",
    "api_token_secret",
    "validate_certs",
    "ca_path",
    "api_timeout",
    "use_smbios",
    "uuid_fallback",
    "include_templates",
    "tag_prefix",
    "profile_catalogue",
    "profiles_api",
    "profiles_api_timeout",
    "freeze",
    "freeze_timeout",
    "thaw_timeout",
    "on_freeze_denied",
    "hooks",
    "hook_timeout",
    "api_delegate",
}
PROXMOX_SECRETS = ("api_password", "api_token_secret")
HOOK_KINDS = {"pre_vm", "pre_disk", "post_disk", "post_vm"}
BACKUP_KEYS = {"pool", "namespace", "ceph", "ssh", "workers"}
CLUSTER_TYPES = ("plain", "proxmox")
# Characters that cannot appear in an RBD pool/namespace name or would break the backup names.
FORBIDDEN_IN_NAMES = set(";/@'\"") | {chr(c) for c in range(32)}


def _check_keys(where: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def _name(where: str, key: str, value: Any, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise ConfigError(f"{where}: {key!r} is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    bad = sorted(set(value) & FORBIDDEN_IN_NAMES)
    if bad or value != value.strip():
        raise ConfigError(f"{where}: {key} {value!r} contains a forbidden character or blank")
    return value


def _patterns(where: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{where}: {key!r} must be a list of patterns")
    if not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{where}: {key!r} must hold non-empty strings")
    return list(value)


def _positive_int(where: str, key: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _ceph(where: str, value: Any) -> dict[str, Any]:
    ceph = _check_keys(f"{where}: ceph", value or {}, CEPH_KEYS)
    for key, item in ceph.items():
        if item is not None and not isinstance(item, str):
            raise ConfigError(f"{where}: ceph.{key} must be a string")
    return dict(ceph)


def _ssh(where: str, value: Any) -> dict[str, Any]:
    ssh = dict(_check_keys(f"{where}: ssh", value or {}, SSH_KEYS))
    ssh.setdefault("user", "root")
    ssh["port"] = _positive_int(where, "ssh.port", ssh.get("port"), 22)
    ssh.setdefault("control_master", True)
    return ssh


def _proxmox(where: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    pve = dict(_check_keys(f"{where}: proxmox", spec.get("proxmox"), PROXMOX_KEYS))
    for key in ("api_host", "api_user"):
        if not isinstance(pve.get(key), str) or not pve[key]:
            raise ConfigError(f"{where}: proxmox.{key} is required")
    if bool(pve.get("api_token_id")) != bool(pve.get("api_token_secret")):
        raise ConfigError(f"{where}: proxmox.api_token_id and proxmox.api_token_secret go together")
    if not pve.get("api_token_id") and not pve.get("api_password"):
        raise ConfigError(f"{where}: proxmox needs api_password, or api_token_id and api_token_secret")
    hooks = _check_keys(f"{where}: proxmox.hooks", pve.get("hooks") or {}, HOOK_KINDS)
    for kind, path in hooks.items():
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ConfigError(f"{where}: proxmox.hooks.{kind} must be an absolute path, got {path!r}")
    if pve.get("profile_catalogue"):
        try:
            parse_profiles(pve["profile_catalogue"])
        except PolicyError as exc:
            raise ConfigError(f"{where}: proxmox.profile_catalogue: {exc}") from exc
    for key in ("api_port", "api_timeout", "profiles_api_timeout", "freeze_timeout", "thaw_timeout", "hook_timeout"):
        if key in pve and pve[key] is not None:
            _positive_int(where, f"proxmox.{key}", pve[key], 1)
    if pve.get("on_freeze_denied") not in (None, "fail", "crash_consistent"):
        raise ConfigError(
            f"{where}: proxmox.on_freeze_denied must be fail or crash_consistent, got {pve['on_freeze_denied']!r}"
        )
    # The secrets stay in the inventory: this normalised copy may be printed.
    for key in PROXMOX_SECRETS:
        if pve.pop(key, None):
            pve[f"has_{key}"] = True
    return pve


def secret_values(live_clusters: Any) -> set[str]:
    """The Proxmox API secrets found in the live clusters' definitions (to mask in any output)."""
    found: set[str] = set()
    for spec in (live_clusters or {}).values() if isinstance(live_clusters, Mapping) else ():
        pve = spec.get("proxmox") if isinstance(spec, Mapping) else None
        if isinstance(pve, Mapping):
            found.update(str(pve[key]) for key in PROXMOX_SECRETS if pve.get(key))
    return found


def _endpoints(where: str, value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: ceph_endpoint must map a Proxmox cluster name (or 'default') to storages")
    mapping: dict[str, dict[str, str]] = {}
    for scope, entries in value.items():
        if not isinstance(entries, Mapping) or not all(isinstance(v, str) and v for v in entries.values()):
            raise ConfigError(f"{where}: ceph_endpoint.{scope} must map storage names to inventory hosts")
        mapping[str(scope)] = {str(k): v for k, v in entries.items()}
    return mapping


def validate_live_cluster(host: str, spec: Any) -> dict[str, Any]:
    where = f"live cluster {host!r}"
    if spec is None:
        raise ConfigError(f"{where}: no backurne_live definition")
    spec = _check_keys(where, spec, LIVE_KEYS)
    cluster_type = spec.get("type", "plain")
    if cluster_type not in CLUSTER_TYPES:
        raise ConfigError(f"{where}: type {cluster_type!r} is not one of {', '.join(CLUSTER_TYPES)}")
    extra: dict[str, Any] = {}
    if cluster_type == "proxmox":
        extra = {"proxmox": _proxmox(where, spec), "ceph_endpoint": _endpoints(where, spec.get("ceph_endpoint"))}
    else:
        for key in ("proxmox", "ceph_endpoint"):
            if key in spec:
                raise ConfigError(f"{where}: {key!r} is only for a live cluster of type proxmox")
    return {
        **extra,
        "host": host,
        "name": _name(where, "name", spec.get("name", host)),
        "type": cluster_type,
        "pool": _name(where, "pool", spec.get("pool", "rbd")),
        "namespace": _name(where, "namespace", spec.get("namespace"), required=False),
        "include": _patterns(where, "include", spec.get("include")),
        "exclude": _patterns(where, "exclude", spec.get("exclude")),
        "ceph": _ceph(where, spec.get("ceph")),
        "workers": _positive_int(where, "workers", spec.get("workers"), 4),
    }


# validate_run_config's arguments: the preflight module's options of the same names.
RUN_CONFIG_OPTIONS = ("profiles", "snap_prefix", "live_clusters", "backup_nodes", "backup", "limit_clusters")


def validate_run_config(
    profiles: Mapping[str, Any],
    snap_prefix: str,
    live_clusters: Mapping[str, Any],
    backup_nodes: Sequence[str],
    backup: Mapping[str, Any],
    limit_clusters: Sequence[str] = (),
) -> dict[str, Any]:
    try:
        validate_prefix(snap_prefix)
        parsed = parse_profiles(profiles)
    except (NamingError, PolicyError) as exc:
        raise ConfigError(str(exc)) from exc
    if not backup_nodes:
        raise ConfigError("the inventory has no backup node (group 'backup_nodes' is empty or missing)")
    if not live_clusters:
        raise ConfigError("the inventory has no live cluster (group 'live_clusters' is empty or missing)")
    clusters = [validate_live_cluster(host, spec) for host, spec in live_clusters.items()]
    seen: dict[str, str] = {}
    for cluster in clusters:
        if cluster["name"] in seen:
            raise ConfigError(
                f"live clusters {seen[cluster['name']]!r} and {cluster['host']!r} share the name {cluster['name']!r}"
            )
        seen[cluster["name"]] = cluster["host"]
    unknown = [name for name in limit_clusters if name not in seen]
    if unknown:
        raise ConfigError(f"limit: no live cluster named {unknown[0]!r} (known: {', '.join(sorted(seen))})")
    if limit_clusters:
        clusters = [c for c in clusters if c["name"] in limit_clusters]
    where = "backup node configuration"
    backup = _check_keys(where, backup or {}, BACKUP_KEYS)
    return {
        "profiles": {
            name: {
                "count": p.count,
                "interval": int(p.interval.total_seconds()),
                "max_on_live": p.max_on_live,
                "priority": p.priority,
            }
            for name, p in parsed.items()
        },
        "live_clusters": clusters,
        "backup": {
            "pool": _name(where, "pool", backup.get("pool", "rbd")),
            "namespace": _name(where, "namespace", backup.get("namespace"), required=False),
            "ceph": _ceph(where, backup.get("ceph")),
            "ssh": _ssh(where, backup.get("ssh")),
            "workers": _positive_int(where, "workers", backup.get("workers"), 4),
        },
    }
