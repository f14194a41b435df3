# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The configuration file of the ``backurne`` CLI and REST API (YAML).

Found at ``--config PATH``, else ``$BACKURNE_CONFIG``, else ``/etc/backurne/backurne.yml``.
Schema (every key optional unless marked)::

    backup:                        # the backup cluster, as seen from this host
      ceph: {cluster: ceph, ceph_client: admin, keyring: PATH, ceph_conf: PATH}
      pool: rbd
      namespace: null
    snap_prefix: backup
    state_dir: /var/lib/backurne   # mapping records and mount points
    live_clusters:                 # for restores; NAME is the live cluster's name
      NAME:
        host: HOST                 # required: the live node, reached over ssh
        ssh: {user: root, port: 22, identity_file: PATH, known_hosts_file: PATH}
        ceph: {cluster, ceph_client, keyring, ceph_conf}   # as seen from the live node
        pool: rbd
        namespace: null
    api:
      tokens_file: PATH            # SHA-256 hashes of the clients' tokens (docs/rest-api.md)
      anonymous: false
      listen: 127.0.0.1:8080
      max_body_bytes: 1048576      # larger request bodies are refused with 413 before being read
    profiles:                      # optional, as backurne_profiles: the web console's fresh/late
      daily: {count: 30}           # colours and its health page (default: daily only)

Every error names the file and the key (``backup.ceph.keyring: must be a string``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backurne_browse.mapping import Mapper
from backurne_core.ceph.rbd import CephAccess, RbdRunner, SshTarget
from backurne_core.policy.naming import NamingError, validate_prefix
from backurne_core.policy.retention import PolicyError, Profile, parse_profiles

DEFAULT_PATH = "/etc/backurne/backurne.yml"
ENV_VAR = "BACKURNE_CONFIG"
DEFAULT_STATE_DIR = "/var/lib/backurne"

_TOP_KEYS = {"backup", "snap_prefix", "state_dir", "live_clusters", "api", "profiles"}
DEFAULT_PROFILES: Mapping[str, Mapping[str, Any]] = {"daily": {"count": 30}}
_CEPH_KEYS = {"cluster", "ceph_client", "keyring", "ceph_conf"}
_SSH_KEYS = {"user", "port", "identity_file", "known_hosts_file"}
_BACKUP_KEYS = {"ceph", "pool", "namespace"}
_LIVE_KEYS = {"host", "ssh", "ceph", "pool", "namespace"}
_API_KEYS = {"tokens_file", "anonymous", "listen", "max_body_bytes"}
# The API's largest request body is a restore request of a few hundred bytes.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Pool and namespace names end up in `IDENT;DISK;COMMENT` listings and rbd specs.
_FORBIDDEN_IN_NAMES = set(";/@'\"") | {chr(c) for c in range(32)}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class CephSettings:
    cluster: str = "ceph"
    ceph_client: str = "admin"
    keyring: str | None = None
    ceph_conf: str | None = None

    def access(self, owner: str = "") -> CephAccess:
        """``owner`` names the settings in errors ("keyring /x (option keyring of OWNER) ...")."""
        return CephAccess(self.cluster, self.ceph_client, self.keyring, self.ceph_conf, owner=owner)


@dataclass(frozen=True)
class SshSettings:
    user: str = "root"
    port: int = 22
    identity_file: str | None = None
    known_hosts_file: str | None = None


@dataclass(frozen=True)
class BackupSettings:
    ceph: CephSettings = field(default_factory=CephSettings)
    pool: str = "rbd"
    namespace: str | None = None


@dataclass(frozen=True)
class LiveCluster:
    name: str
    host: str
    ssh: SshSettings = field(default_factory=SshSettings)
    ceph: CephSettings = field(default_factory=CephSettings)
    pool: str = "rbd"
    namespace: str | None = None

    def ssh_target(self) -> SshTarget:
        return SshTarget(
            host=self.host,
            user=self.ssh.user,
            port=self.ssh.port,
            identity_file=self.ssh.identity_file,
            known_hosts_file=self.ssh.known_hosts_file,
        )

    def runner(self, timeout: float = 120) -> RbdRunner:
        """rbd on this live cluster's node, over ssh."""
        return RbdRunner(
            self.ceph.access(f"live_clusters.{self.name}.ceph"),
            self.ssh_target(),
            default_timeout=timeout,
            label=f"live cluster {self.name}",
        )


@dataclass(frozen=True)
class ApiSettings:
    tokens_file: str | None = None
    anonymous: bool = False
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class Config:
    backup: BackupSettings = field(default_factory=BackupSettings)
    snap_prefix: str = "backup"
    state_dir: str = DEFAULT_STATE_DIR
    live_clusters: Mapping[str, LiveCluster] = field(default_factory=dict)
    api: ApiSettings = field(default_factory=ApiSettings)
    source: str | None = None
    # The backup profiles (as the playbooks' backurne_profiles): how old a backup may get.
    profiles: Mapping[str, Profile] = field(default_factory=lambda: parse_profiles(DEFAULT_PROFILES))

    def backup_runner(self, timeout: float = 120) -> RbdRunner:
        """rbd on the backup cluster, from this host."""
        return RbdRunner(self.backup.ceph.access("backup.ceph"), default_timeout=timeout, label="backup cluster")

    def mapper(self, timeout: float = 120) -> Mapper:
        """File-level access (map/unmap/list/extract) to the backup pool, state in state_dir."""
        backup = self.backup
        return Mapper(self.backup_runner(timeout), backup.pool, backup.namespace, self.state_dir, timeout=timeout)

    def live_cluster(self, name: str) -> LiveCluster:
        try:
            return self.live_clusters[name]
        except KeyError:
            known = ", ".join(sorted(self.live_clusters)) or "none configured"
            raise ConfigError(
                f"{self.source or 'configuration'}: no live cluster {name!r} in live_clusters (known: {known})"
            ) from None


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def mapping(self, key: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key or "top level", f"must be a mapping, got {type(value).__name__}")
        for item in value:
            if not isinstance(item, str) or item not in allowed:
                prefix = f"{key}." if key else ""
                raise self.fail(f"{prefix}{item}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def string(self, key: str, value: Any, default: str | None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def name(self, key: str, value: Any, default: str | None) -> str | None:
        text = self.string(key, value, default)
        if text is not None and (set(text) & _FORBIDDEN_IN_NAMES or text != text.strip() or text.startswith("-")):
            raise self.fail(key, f"{text!r} is not a valid pool/namespace/host name")
        return text

    def path(self, key: str, value: Any) -> str | None:
        text = self.string(key, value, None)
        return None if text is None else os.path.expanduser(text)

    def ceph(self, key: str, value: Any) -> CephSettings:
        spec = self.mapping(key, value, _CEPH_KEYS)
        return CephSettings(
            cluster=self.name(f"{key}.cluster", spec.get("cluster"), "ceph") or "ceph",
            ceph_client=self.name(f"{key}.ceph_client", spec.get("ceph_client"), "admin") or "admin",
            keyring=self.path(f"{key}.keyring", spec.get("keyring")),
            ceph_conf=self.path(f"{key}.ceph_conf", spec.get("ceph_conf")),
        )

    def ssh(self, key: str, value: Any) -> SshSettings:
        spec = self.mapping(key, value, _SSH_KEYS)
        port = spec.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise self.fail(f"{key}.port", f"must be a port number, got {port!r}")
        return SshSettings(
            user=self.name(f"{key}.user", spec.get("user"), "root") or "root",
            port=port,
            identity_file=self.path(f"{key}.identity_file", spec.get("identity_file")),
            known_hosts_file=self.path(f"{key}.known_hosts_file", spec.get("known_hosts_file")),
        )


def parse_config(data: Any, source: str = "configuration") -> Config:
    """A Config from the parsed YAML document ``data``; ConfigError names the bad key."""
    reader = _Reader(source)
    top = reader.mapping("", data, _TOP_KEYS)
    backup_spec = reader.mapping("backup", top.get("backup"), _BACKUP_KEYS)
    backup = BackupSettings(
        ceph=reader.ceph("backup.ceph", backup_spec.get("ceph")),
        pool=reader.name("backup.pool", backup_spec.get("pool"), "rbd") or "rbd",
        namespace=reader.name("backup.namespace", backup_spec.get("namespace"), None),
    )
    prefix = reader.string("snap_prefix", top.get("snap_prefix"), "backup") or "backup"
    try:
        validate_prefix(prefix)
    except NamingError as exc:
        raise reader.fail("snap_prefix", str(exc)) from None
    # Same precedence as the modules (module_utils/stream/progress.py): the file, then $BACKURNE_STATE_DIR,
    # then the default, so `backurne status` reads the directory the transfers write to.
    state_dir = (
        reader.path("state_dir", top.get("state_dir")) or os.environ.get("BACKURNE_STATE_DIR") or DEFAULT_STATE_DIR
    )
    if not os.path.isabs(state_dir):
        raise reader.fail("state_dir", f"must be an absolute path, got {state_dir!r}")

    clusters_spec = top.get("live_clusters")
    if clusters_spec is None:
        clusters_spec = {}
    if not isinstance(clusters_spec, Mapping):
        raise reader.fail("live_clusters", f"must be a mapping of NAME: settings, got {type(clusters_spec).__name__}")
    live: dict[str, LiveCluster] = {}
    for name, spec in clusters_spec.items():
        key = f"live_clusters.{name}"
        if not isinstance(name, str) or not name or set(name) & _FORBIDDEN_IN_NAMES:
            raise reader.fail(key, "a live cluster name must be a non-empty string without ; / @ or quotes")
        spec = reader.mapping(key, spec, _LIVE_KEYS)
        host = reader.name(f"{key}.host", spec.get("host"), None)
        if host is None:
            raise reader.fail(f"{key}.host", "is required")
        live[name] = LiveCluster(
            name=name,
            host=host,
            ssh=reader.ssh(f"{key}.ssh", spec.get("ssh")),
            ceph=reader.ceph(f"{key}.ceph", spec.get("ceph")),
            pool=reader.name(f"{key}.pool", spec.get("pool"), "rbd") or "rbd",
            namespace=reader.name(f"{key}.namespace", spec.get("namespace"), None),
        )

    api_spec = reader.mapping("api", top.get("api"), _API_KEYS)
    anonymous = api_spec.get("anonymous", False)
    if not isinstance(anonymous, bool):
        raise reader.fail("api.anonymous", f"must be true or false, got {anonymous!r}")
    max_body = api_spec.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise reader.fail("api.max_body_bytes", f"must be a positive number of bytes, got {max_body!r}")
    api = ApiSettings(
        tokens_file=reader.path("api.tokens_file", api_spec.get("tokens_file")),
        anonymous=anonymous,
        listen=reader.string("api.listen", api_spec.get("listen"), "127.0.0.1:8080") or "127.0.0.1:8080",
        max_body_bytes=max_body,
    )
    profiles_spec = top.get("profiles")
    try:
        profiles = parse_profiles(DEFAULT_PROFILES if profiles_spec is None else profiles_spec)
    except PolicyError as exc:
        raise reader.fail("profiles", str(exc)) from None
    return Config(backup, prefix, state_dir, live, api, source, profiles)


def config_path(path: str | None = None) -> str:
    """Where the configuration is read from: ``path``, else $BACKURNE_CONFIG, else the default."""
    return path or os.environ.get(ENV_VAR) or DEFAULT_PATH


def load_config(path: str | None = None) -> Config:
    """Read and validate the configuration file (see the module docstring)."""
    source = config_path(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "" if path or os.environ.get(ENV_VAR) else f" (give one with --config or ${ENV_VAR})"
        raise ConfigError(f"configuration file {source} not found{hint}") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {source}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {source}: not valid YAML: {exc}") from None
    return parse_config(data, source)
