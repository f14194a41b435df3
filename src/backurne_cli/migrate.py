# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``backurne migrate-config``: a backurne 2.x configuration file turned into an inventory.

2.x's ``/etc/backurne/backurne.conf`` is Python source (``config = {...}``). It is parsed, never
run: the module is read with ``ast.parse`` and only the dict literal assigned to ``config`` is
evaluated, value by value, with ``ast.literal_eval`` (plus the constant arithmetic its sample uses,
``1024 * 1024``). A value that is not a literal (a call, a name) is not carried and is reported.

The result is an inventory (``hosts.yml``), its ``group_vars/all/main.yml``, the secrets in
``group_vars/all/vault.yml`` (mode 0600, to encrypt with ansible-vault), and the list of every
setting carried, renamed or not carried with the reason (docs/migration.md has the same table).
"""

from __future__ import annotations

import ast
import operator
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

# 2.x's defaults (its config.py): what a setting means when the file does not set it.
V2_DEFAULTS: dict[str, Any] = {
    "snap_prefix": "backup",
    "profiles": {},
    "profiles_api": None,
    "backup_cluster": {"pool": "rbd"},
    "live_clusters": [],
    "extra_retention_time": 0,
    "ceph_endpoint": {},
    "download_compression": False,
    "fsfreeze": True,
    "uuid_fallback": True,
    "backup_worker": 24,
    "live_worker": 12,
    "hash_binary": "/usr/bin/xxhsum",
    "lockdir": "/var/lock/backurne",
    "hooks": {"pre_vm": None, "pre_disk": None, "post_disk": None, "post_vm": None},
}
BACKUP_HOST = "backup1"
VAULT_FILE = os.path.join("group_vars", "all", "vault.yml")
MAIN_FILE = os.path.join("group_vars", "all", "main.yml")
HOSTS_FILE = "hosts.yml"

# Binary operators allowed between numeric constants (2.x's sample writes 'bwlimit': 1024 * 1024).
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


class MigrationError(ValueError):
    """The file cannot be read as a 2.x configuration; nothing was written."""


@dataclass
class Note:
    """What became of one 2.x setting."""

    setting: str
    outcome: str  # carried | renamed | not carried
    detail: str


@dataclass
class Migration:
    hosts: dict[str, Any]
    group_vars: dict[str, Any]
    vault: dict[str, str]
    notes: list[Note] = field(default_factory=list)

    def not_carried(self) -> list[Note]:
        return [note for note in self.notes if note.outcome == "not carried"]


# -- reading the file, safely ------------------------------------------------------------------


class _NotLiteral(ValueError):
    pass


def _value(node: ast.expr) -> Any:
    """A literal (ast.literal_eval), or constant arithmetic between numbers; nothing else."""
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _value(node.left), _value(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            return _ARITHMETIC[type(node.op)](left, right)
        raise _NotLiteral(ast.unparse(node))
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _NotLiteral("**expansion")
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise _NotLiteral(ast.unparse(node)) from exc


def read_v2_config(text: str, source: str = "<config>") -> tuple[dict[str, Any], list[Note]]:
    """The settings of a 2.x file (``config = {...}``) and notes for what could not be read."""
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise MigrationError(
            f"{source}: not a backurne 2.x configuration (Python syntax error line {exc.lineno})"
        ) from None
    literal: ast.Dict | None = None
    notes: list[Note] = []
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id == "config":
            if not isinstance(statement.value, ast.Dict):  # type: ignore[union-attr]
                raise MigrationError(f"{source} line {statement.lineno}: 'config' is not a dict literal")
            literal = statement.value  # type: ignore[union-attr]
        else:
            notes.append(
                Note(
                    f"line {statement.lineno}",
                    "not carried",
                    "a statement other than 'config = {...}': not run (the file is parsed, never executed)",
                )
            )
    if literal is None:
        raise MigrationError(f"{source}: no 'config = {{...}}' dict literal found")
    settings: dict[str, Any] = {}
    for key_node, value_node in zip(literal.keys, literal.values, strict=True):
        if key_node is None or not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, str):
            raise MigrationError(f"{source} line {literal.lineno}: config keys must be strings")
        try:
            settings[key_node.value] = _value(value_node)
        except _NotLiteral as exc:
            notes.append(
                Note(
                    key_node.value,
                    "not carried",
                    f"line {value_node.lineno}: not a literal ({exc}); the file is never executed, set it by hand",
                )
            )
    return settings, notes


# -- turning settings into an inventory --------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class _Builder:
    def __init__(self, settings: Mapping[str, Any], unreadable: set[str]) -> None:
        self.settings = settings
        self.unreadable = unreadable  # set in the file but not a literal: no 2.x default stands in
        self.notes: list[Note] = []
        self.group_vars: dict[str, Any] = {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3"}
        self.vault: dict[str, str] = {}
        self.live: dict[str, Any] = {}
        self.endpoints: dict[str, Any] = {}
        self.backup: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.unreadable:
            return None
        return self.settings.get(key, V2_DEFAULTS.get(key))

    def note(self, setting: str, outcome: str, detail: str) -> None:
        self.notes.append(Note(setting, outcome, detail))

    def build(self) -> Migration:
        self._top_level()
        self._backup()
        clusters = self.get("live_clusters") or []
        if not isinstance(clusters, list):
            raise MigrationError("live_clusters must be a list of dicts")
        for index, cluster in enumerate(clusters):
            if not isinstance(cluster, Mapping) or not cluster.get("name"):
                raise MigrationError(f"live_clusters[{index}]: a dict with a 'name' is required")
            self._cluster(cluster)
        self._proxmox_wide()
        self._unknown()
        hosts = {
            "all": {
                "children": {
                    "live_clusters": {"hosts": self.live},
                    "backup_nodes": {"hosts": {BACKUP_HOST: self.backup}},
                    **({"ceph_endpoints": {"hosts": self.endpoints}} if self.endpoints else {}),
                }
            }
        }
        return Migration(hosts, self.group_vars, self.vault, self.notes)

    def _top_level(self) -> None:
        self.group_vars["backurne_snap_prefix"] = self.get("snap_prefix")
        self.note("snap_prefix", "carried", f"backurne_snap_prefix: {self.get('snap_prefix')!r} (same snapshots)")
        profiles = self.get("profiles") or {}
        self.group_vars["backurne_profiles"] = {name: dict(spec) for name, spec in profiles.items()}
        self.note("profiles", "carried", "backurne_profiles (count, max_on_live, priority as they were)")
        odd = [name for name in profiles if name not in ("hourly", "daily", "weekly", "monthly")]
        if odd:
            self.note(
                "profiles",
                "not carried",
                f"profile(s) {', '.join(odd)}: add 'interval:' to each (only hourly, daily, weekly, monthly have one)",
            )
        days = self.get("extra_retention_time") or 0
        self.group_vars["backurne_extra_retention_time"] = f"{days}d"
        self.note("extra_retention_time", "renamed", f"backurne_extra_retention_time: '{days}d' (2.x counted days)")
        self.group_vars["backurne_compression"] = bool(self.get("download_compression"))
        self.note(
            "download_compression", "renamed", "backurne_compression (zstd on the stream; 3.x's own default is on)"
        )
        hasher = self.get("hash_binary")
        if hasher:
            self.group_vars["backurne_hasher"] = [hasher] if isinstance(hasher, str) else list(hasher)
            self.note("hash_binary", "renamed", "backurne_hasher (an argument list; must exist on both nodes)")
        self.note(
            "check_db",
            "not carried",
            "3.x keeps its history in history.sqlite under backurne_state_dir (default /var/lib/backurne), "
            "another schema: 2.x's database is not imported, the check's memory starts afresh",
        )
        # 3.x locks images in Ceph: the two share no lock. backup.yml refuses to start while a 2.x
        # process holds one of these files (module legacy_lock).
        self.group_vars["backurne_legacy_lockdir"] = self.get("lockdir")
        self.note(
            "lockdir",
            "renamed",
            "backurne_legacy_lockdir: 3.x locks images in Ceph, not in files, and refuses to run while "
            "2.x holds a lock there (stop 2.x's schedule before the cut-over, docs/migration.md)",
        )
        for key, reason in (
            ("pretty_colors", "Ansible's output: ANSIBLE_NOCOLOR / [defaults] nocolor"),
            ("log_level", "Ansible's verbosity (-v ...) and the report callback"),
            ("influxdb", "no InfluxDB writer: the Prometheus textfile (backurne_prometheus_file) or syslog"),
            ("expire_processes", "expiry follows the backup node's workers"),
        ):
            if key in self.settings:
                self.note(key, "not carried", reason)
        self._report_time()

    def _report_time(self) -> None:
        if "report_time" not in self.settings:
            return
        value = self.settings["report_time"]
        if value == "syslog":
            detail = "the report callback's syslog option: [callback_backurne_report] syslog = true (ansible.cfg)"
        elif value == "influxdb":
            detail = "no InfluxDB writer: the Prometheus textfile (backurne_prometheus_file) or syslog instead"
        elif value:
            detail = f"no per-record append file: the callback's JSON report (BACKURNE_REPORT_JSON) instead of {value}"
        else:
            detail = "off in 2.x; nothing to carry"
        self.note("report_time", "not carried", detail)

    def _backup(self) -> None:
        backup_cluster = self.get("backup_cluster") or {}
        workers = self.settings.get("backup_worker", self.settings.get("download_worker", V2_DEFAULTS["backup_worker"]))
        self.backup.update(
            {
                # 2.x ran on the backup node itself; run ansible there, or set ansible_host.
                "ansible_connection": "local",
                "backurne_backup": {
                    "pool": backup_cluster.get("pool", "rbd"),
                    "workers": int(workers),
                    "ssh": {"user": "root", "port": 22},
                },
            }
        )
        self.note("backup_cluster", "carried", "backurne_backup.pool of the backup node (host backup1)")
        for extra in sorted(set(backup_cluster) - {"pool"}):
            self.note(f"backup_cluster.{extra}", "not carried", "unknown to 2.x's backup_cluster")
        for key in ("backup_worker", "download_worker"):
            if key in self.settings or key == "backup_worker":
                self.note(key, "renamed", f"backurne_backup.workers: {workers} (parallel transfers on the backup node)")
                break

    def _cluster(self, cluster: Mapping[str, Any]) -> None:
        name = str(cluster["name"])
        where = f"live_clusters[{name}]"
        kind = cluster.get("type", "plain")
        live: dict[str, Any] = {"name": name, "type": kind}
        host: dict[str, Any] = {"backurne_live": live}
        fqdn = cluster.get("fqdn")
        if fqdn:
            host["ansible_host"] = fqdn
            self.note(f"{where}.fqdn", "renamed", f"ansible_host of inventory host {name}")
        else:
            self.note(
                f"{where}.fqdn",
                "not carried",
                "None: 3.x reaches a live cluster over ssh to a Ceph client node; set ansible_host of host "
                f"{name} (get_helper/use_helper have no equivalent)",
            )
        for key in ("get_helper", "use_helper"):
            if key in cluster:
                self.note(f"{where}.{key}", "not carried", "no command wrapper: give an ssh-reachable Ceph client node")
        for key in ("tc_iface", "tc_minor", "bwlimit"):
            if key in cluster:
                self.note(
                    f"{where}.{key}",
                    "not carried",
                    "no rate limiting by backurne: shape the ssh traffic outside (tc), or lower the workers",
                )
        live["workers"] = int(self.settings.get("live_worker", self.settings.get("snapshooter_processes", 12)))
        if kind == "proxmox":
            self._proxmox(name, where, cluster, live)
        else:
            live["pool"] = cluster.get("pool", "rbd")
            self.note(f"{where}.pool", "carried", f"backurne_live.pool of host {name}")
        known = {"name", "type", "fqdn", "pool", "user", "passwd", "tls", "use_smbios"}
        known |= {"get_helper", "use_helper", "tc_iface", "tc_minor", "bwlimit"}
        for extra in sorted(set(cluster) - known):
            self.note(f"{where}.{extra}", "not carried", "unknown 2.x setting")
        self.live[name] = host

    def _proxmox(self, name: str, where: str, cluster: Mapping[str, Any], live: dict[str, Any]) -> None:
        secret = f"vault_backurne_{_slug(name)}_api_password"
        pve: dict[str, Any] = {
            "api_host": cluster.get("fqdn") or name,
            "api_user": cluster.get("user", "root@pam"),
            "api_password": "{{ " + secret + " }}",
            "validate_certs": bool(cluster.get("tls", True)),
            "use_smbios": bool(cluster.get("use_smbios", False)),
        }
        if cluster.get("passwd") is not None:
            self.vault[secret] = str(cluster["passwd"])
        self.note(f"{where}.user", "renamed", "backurne_live.proxmox.api_user")
        self.note(
            f"{where}.passwd",
            "renamed",
            f"backurne_live.proxmox.api_password from {secret} in {VAULT_FILE} (encrypt it: ansible-vault encrypt); "
            "an API token (api_token_id/api_token_secret) is the better choice",
        )
        self.note(f"{where}.tls", "renamed", "backurne_live.proxmox.validate_certs (2.x: verify_ssl)")
        self.note(f"{where}.use_smbios", "carried", "backurne_live.proxmox.use_smbios")
        live["proxmox"] = pve

    def _proxmox_wide(self) -> None:
        """2.x's global settings that 3.x keeps per Proxmox cluster."""
        proxmox = [spec["backurne_live"] for spec in self.live.values() if spec["backurne_live"]["type"] == "proxmox"]
        hooks = {kind: path for kind, path in (self.get("hooks") or {}).items() if path}
        endpoints = self.get("ceph_endpoint") or {}
        wide = (
            ("fsfreeze", "freeze", self.get("fsfreeze")),
            ("uuid_fallback", "uuid_fallback", self.get("uuid_fallback")),
            ("profiles_api", "profiles_api", self.get("profiles_api")),
            ("hooks", "hooks", hooks or None),
        )
        for setting, key, value in wide:
            if value is None:
                continue
            if not proxmox:
                self.note(setting, "not carried", "applies to Proxmox guests only, and no live cluster is proxmox")
                continue
            for live in proxmox:
                live["proxmox"][key] = value
            self.note(setting, "renamed", f"backurne_live.proxmox.{key} of each Proxmox cluster")
        if endpoints:
            self._ceph_endpoints(endpoints, proxmox)

    def _ceph_endpoints(self, endpoints: Mapping[str, Any], proxmox: list[dict[str, Any]]) -> None:
        names = {live["name"] for live in proxmox}
        by_fqdn = {spec.get("ansible_host"): host for host, spec in self.live.items() if spec.get("ansible_host")}
        for scope in endpoints:
            if scope != "default" and scope not in names:
                self.note(f"ceph_endpoint.{scope}", "not carried", "names no Proxmox live cluster of this file")
        for live in proxmox:
            mapping: dict[str, dict[str, str]] = {}
            for scope in ("default", live["name"]):
                for storage, fqdn in (endpoints.get(scope) or {}).items():
                    mapping.setdefault(scope, {})[storage] = self._endpoint_host(str(fqdn), by_fqdn)
            if mapping:
                live["ceph_endpoint"] = mapping
        self.note(
            "ceph_endpoint",
            "renamed",
            "backurne_live.ceph_endpoint of each Proxmox cluster; the FQDNs became inventory hosts (group "
            "ceph_endpoints, ssh as root, the admin keyring as in 2.x: set backurne_ceph to a backurne client)",
        )

    def _endpoint_host(self, fqdn: str, by_fqdn: Mapping[str, str]) -> str:
        if fqdn in by_fqdn:
            return by_fqdn[fqdn]
        self.endpoints.setdefault(fqdn, {"ansible_host": fqdn, "backurne_ceph": {}})
        return fqdn

    def _unknown(self) -> None:
        handled = set(V2_DEFAULTS) | {"pretty_colors", "log_level", "check_db", "report_time", "influxdb"}
        handled |= {"download_worker", "snapshooter_processes", "expire_processes"}
        if "live_worker" in self.settings or "snapshooter_processes" in self.settings:
            self.note("live_worker", "renamed", "backurne_live.workers of each live cluster (snapshots, expiry)")
        for key in sorted(set(self.settings) - handled):
            self.note(key, "not carried", "unknown 2.x setting")


def migrate(text: str, source: str = "<config>") -> Migration:
    settings, notes = read_v2_config(text, source)
    unreadable = {note.setting for note in notes}
    migration = _Builder(settings, unreadable).build()
    migration.notes[:0] = notes
    return migration


# -- writing -------------------------------------------------------------------------------------

_HEADER = "# Written by `backurne migrate-config` from {source}. Review it: docs/migration.md.\n"


def _dump(data: Any) -> str:
    return "---\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def write_inventory(migration: Migration, out_dir: str, source: str, force: bool = False) -> list[str]:
    """Write hosts.yml, group_vars/all/main.yml and (with secrets) vault.yml; the paths written.

    Existing files are refused unless ``force``: nothing is written then.
    """
    files = {HOSTS_FILE: _dump(migration.hosts), MAIN_FILE: _dump(migration.group_vars)}
    if migration.vault:
        files[VAULT_FILE] = _dump(migration.vault)
    paths = {name: os.path.join(out_dir, name) for name in files}
    existing = [path for path in paths.values() if os.path.exists(path)]
    if existing and not force:
        raise MigrationError(f"{existing[0]} exists (--force replaces it); nothing written")
    header = _HEADER.format(source=source)
    for name, text in files.items():
        path = paths[name]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = 0o600 if name == VAULT_FILE else 0o644
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(header + text)
    return list(paths.values())


def format_notes(notes: list[Note]) -> str:
    width = max((len(note.setting) for note in notes), default=7)
    lines = [f"{'setting'.ljust(width)}  {'outcome'.ljust(11)}  detail"]
    lines += [f"{note.setting.ljust(width)}  {note.outcome.ljust(11)}  {note.detail}" for note in notes]
    return "\n".join(lines)
