# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The discovery step of a Proxmox VE live cluster (the module backurne.rbd.proxmox_discover):
# read the guests, their configs and the storages through the API, ask the profiles API, and
# return the disks to back up per live Ceph endpoint, with what the listing positively saw.
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    ProxmoxerApi,
    PveApi,
    PveAuth,
    PveError,
    cluster_status,
    fetch_profiles,
    guest_current_config,
    guest_pending,
    list_guests,
    list_nodes,
    list_storages,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import (
    DiscoveryOptions,
    discover,
    discovery_coverage,
    group_by_endpoint,
    guests_to_read,
    offline_nodes,
    pending_changes,
    tag_policy,
    unmatched_patterns,
    unseen_warning,
)


def validate_discover_params(params: Mapping[str, Any]) -> None:
    try:
        parse_profiles(params["profiles"])
        if params["profile_catalogue"]:
            parse_profiles(params["profile_catalogue"])
    except PolicyError as exc:
        raise ModuleFailure(f"proxmox_discover: bad profiles: {exc}") from exc
    if params["workers"] < 1:
        raise ModuleFailure(f"proxmox_discover: workers must be at least 1, got {params['workers']}")


def endpoint_groups(disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct (endpoint, pool, namespace) with its image map (RBD image -> backup image)."""
    groups: dict[tuple[str, str, str], dict[str, str]] = {}
    for disk in disks:
        key = (disk["endpoint"], disk["pool"], disk["namespace"] or "")
        groups.setdefault(key, {})[disk["image"]] = disk["backup_image"]
    return [
        {"endpoint": e, "pool": pool, "namespace": ns or None, "image_map": image_map}
        for (e, pool, ns), image_map in sorted(groups.items())
    ]


# DiscoveryOptions field -> the module option that sets it.
OPTION_OF_FIELD = {
    "pve_cluster": "live_cluster",
    "endpoint_map": "ceph_endpoint",
    "use_smbios": "use_smbios",
    "uuid_fallback": "uuid_fallback",
    "include_templates": "include_templates",
    "tag_prefix": "tag_prefix",
    "defaults": "profiles",
    "catalogue": "profile_catalogue",
    "only_guests": "only_guests",
    "exclude_guests": "exclude_guests",
}


@dataclass
class DiscoveryJob:
    """The whole proxmox_discover step; ``warn`` receives the warnings."""

    p: Mapping[str, Any]
    warn: Callable[[str], None]
    warnings: list[str] = field(default_factory=list)
    read_errors: list[dict[str, Any]] = field(default_factory=list)  # guests whose config could not be read
    pendings: dict[int, dict[str, Any]] = field(default_factory=dict)  # vmid -> pending changes
    node_list: list[dict[str, Any]] = field(default_factory=list)
    status_list: list[dict[str, Any]] = field(default_factory=list)

    @property
    def options(self) -> DiscoveryOptions:
        return DiscoveryOptions(**{name: self.p[option] for name, option in OPTION_OF_FIELD.items()})

    def read_cluster(self, api: PveApi) -> list[str]:
        """Nodes and cluster status: not fatal (the guests can still be backed up), but without
        them nothing proves the listing complete, so no backup may fade out this run."""
        problems: list[str] = []
        try:
            self.node_list = list_nodes(api)
        except PveError as exc:
            problems.append(f"node list not readable: {exc}")
        try:
            self.status_list = cluster_status(api)
        except PveError as exc:
            problems.append(f"cluster status not readable: {exc}")
        return problems

    def read_configs(self, api: PveApi, guests: list[Any]) -> dict[int, dict[str, Any]]:
        def read(guest: Any) -> tuple[int, dict[str, Any] | None]:
            try:
                config = guest_current_config(api, guest.node, guest.type, guest.vmid)
                self.pendings[guest.vmid] = pending_changes(guest_pending(api, guest.node, guest.type, guest.vmid))
                return guest.vmid, config
            except PveError as exc:
                name = guest.name if guest.named else "?"  # not listed with a name, config unread: unknown
                where = f"guest {guest.vmid} ({name}) on node {guest.node}"
                self.read_errors.append({"vmid": guest.vmid, "name": name, "disk": None, "error": f"{where}: {exc}"})
                return guest.vmid, None

        outcomes = run_batch(guests, read, self.p["workers"])
        return {vmid: config for vmid, config in outcomes if config is not None}

    def ask_profiles_api(self, guests: list[Any], configs: dict[int, Any]) -> dict[int, dict[str, Any] | None]:
        p = self.p
        if not p["profiles_api"]:
            return {}

        def ask(guest: Any) -> tuple[int, dict[str, Any] | None]:
            if tag_policy(guest.tags, p["tag_prefix"]).off or guest.vmid not in configs:
                return guest.vmid, None
            payload = {"cluster": p["live_cluster"], **guest.to_dict(), "config": configs[guest.vmid]}
            answer, why = fetch_profiles(p["profiles_api"], payload, p["profiles_api_timeout"])
            if why:
                self.warnings.append(f"guest {guest.vmid} ({guest.name}): {why}")
                return guest.vmid, None
            extra = (answer or {}).get("profiles", {k: v for k, v in (answer or {}).items() if k != "backup"})
            try:
                if extra:
                    parse_profiles(extra)
            except PolicyError as exc:
                self.warnings.append(f"guest {guest.vmid} ({guest.name}): profiles_api answer: {exc}: defaults apply")
                return guest.vmid, None
            return guest.vmid, answer

        return dict(run_batch(guests, ask, p["workers"]))

    def unmatched_limits(self, resources: list[dict[str, Any]], found: Mapping[str, Any]) -> list[str]:
        listed = [str(e[k]) for e in [*found["guests"], *found["skipped"], *found["failed"]] for k in ("vmid", "name")]
        listed += [str(item.get(k)) for item in resources for k in ("vmid", "name") if item.get(k) is not None]
        unmatched = unmatched_patterns(self.p["only_guests"], listed)
        if unmatched:
            self.warnings.append(
                f"live cluster {self.p['live_cluster']}: backurne_limit_images pattern(s) "
                f"{', '.join(map(repr, unmatched))} match no guest name or vmid"
            )
        return unmatched

    def __call__(self) -> dict[str, Any]:
        p = self.p
        validate_discover_params(p)
        try:
            api = ProxmoxerApi(PveAuth.from_params(p))
            resources = list_guests(api)
            storage_cfg = list_storages(api)
        except PveError as exc:
            raise ModuleFailure(f"live cluster {p['live_cluster']}: {exc}") from exc
        problems = self.read_cluster(api)
        guests = guests_to_read(resources, self.options)
        configs = self.read_configs(api, guests)
        answers = self.ask_profiles_api(guests, configs)

        found = discover(resources, configs, storage_cfg, self.options, answers)
        self.warnings.extend(found["warnings"])
        for disk in found["disks"]:
            disk["pending"] = self.pendings.get(disk["guest"]["vmid"], {})
        offline = offline_nodes(self.node_list, self.status_list)
        coverage = discovery_coverage(resources, found, offline, problems, self.read_errors)
        incomplete = unseen_warning(p["live_cluster"], coverage)
        if incomplete:
            self.warnings.append(incomplete)
        unmatched = self.unmatched_limits(resources, found)
        catalogue: dict[str, Any] = {**p["profile_catalogue"], **p["profiles"]}
        for disk in found["disks"]:
            for name, spec in disk["profiles"].items():
                catalogue.setdefault(name, spec)
        for warning in self.warnings:
            self.warn(warning)
        read_vmids = {e["vmid"] for e in self.read_errors}
        return {
            "changed": False,
            "disks": found["disks"],
            "endpoints": group_by_endpoint(found["disks"]),
            "groups": endpoint_groups(found["disks"]),
            "guests": found["guests"],
            "excluded": found["skipped"],
            "failed_guests": self.read_errors + [f for f in found["failed"] if f["vmid"] not in read_vmids],
            "profiles": catalogue,
            "coverage": coverage.to_dict(),
            "unmatched_limits": unmatched,
        }
