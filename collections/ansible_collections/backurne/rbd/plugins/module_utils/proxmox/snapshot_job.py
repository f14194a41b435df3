# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The snapshot step for Proxmox VE guests' disks on one live Ceph node (the module
# backurne.rbd.proxmox_snapshot): plan each disk with its guest's profiles, then guest by guest
# freeze (when the agent allows), snapshot, thaw and verify, with the hooks around; remember the
# guests not confirmed thawed for the next run.
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_now
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import (
    ModuleFailure,
    list_pool,
    pool_key,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    parse_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.snapshot_plan import (
    SnapshotStep,
    create_plan_snapshots,
    fail_or_return,
    failed_images,
    planned_maps,
    snapshot_diff,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    PROXMOXER_IMPORT_ERROR,
    THAW_PENDING_FILE,
    ProxmoxerApi,
    PveApi,
    PveAuth,
    PveError,
    load_thaw_pending,
    recheck_thawed,
    save_thaw_pending,
    snapshot_guest,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir

DISK_KEYS = ("image", "pool", "backup_image", "guest")


def validate_snapshot_params(params: Mapping[str, Any]) -> None:
    """The module's own checks (the shared options are the factory's): timeouts and disks."""
    for key in ("freeze_timeout", "thaw_timeout"):
        if params[key] < 1:
            raise ModuleFailure(f"proxmox_snapshot: {key} must be at least 1, got {params[key]}")
    for index, disk in enumerate(params["disks"]):
        missing = [k for k in DISK_KEYS if not disk.get(k)]
        if missing:
            raise ModuleFailure(f"proxmox_snapshot: disks[{index}] lacks {', '.join(missing)}")


def first_freeze(guest_plans: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((plan["freeze"] for plan in guest_plans if plan.get("freeze")), None)


def may_be_frozen(
    by_guest: dict[Any, list[dict[str, Any]]], guest_info: dict[Any, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The guests whose thaw was not confirmed, one entry each, named."""
    found = []
    for vmid, guest_plans in by_guest.items():
        freeze = first_freeze(guest_plans)
        if freeze and freeze.get("state") == "may-be-frozen":
            guest = guest_info[vmid]
            found.append({**{k: guest.get(k) for k in ("vmid", "name", "node")}, "error": freeze.get("message")})
    return found


def remember_may_be_frozen(
    path: str,
    cluster: str,
    pending: dict[str, dict[str, Any]],
    by_guest: dict[Any, list[dict[str, Any]]],
    guest_info: dict[Any, dict[str, Any]],
) -> str | None:
    """Keep the guests not confirmed thawed for the next run; drop those confirmed thawed."""
    now = parse_now(None).isoformat(timespec="seconds")
    updated = dict(pending)
    for vmid, guest_plans in by_guest.items():
        freeze = first_freeze(guest_plans)
        if freeze is None:
            continue
        if freeze.get("state") == "may-be-frozen":
            since = pending.get(str(vmid), {}).get("since", now)
            updated[str(vmid)] = {
                "node": guest_info[vmid].get("node"),
                "since": since,
                "message": freeze.get("message"),
            }
        else:
            updated.pop(str(vmid), None)
    if updated == pending:
        return None
    try:
        save_thaw_pending(path, cluster, updated)
    except OSError as exc:
        return f"cannot remember the guests that may be frozen in {path}: {exc}"
    return None


def guest_where(guest: Mapping[str, Any], disk: Any) -> str:
    return f"guest {guest.get('vmid')} ({guest.get('name')}) disk {disk}"


@dataclass
class GuestSnapshotJob(SnapshotStep):
    """The whole proxmox_snapshot step; ``warn`` receives the warnings at the end.

    ``missing_lib`` is the message when proxmoxer is missing and a freeze needs the API.
    """

    missing_lib: str = "proxmoxer is missing"
    listings: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # pool/ns -> image -> snapshots
    warnings: list[str] = field(default_factory=list)

    @property
    def cluster(self) -> str:
        return str(self.p["live_cluster"])

    # -- planning ---------------------------------------------------------------------------

    def list_pools(self) -> None:
        for disk in self.p["disks"]:
            key = pool_key(disk["pool"], disk.get("namespace"))
            if key not in self.listings:
                self.listings[key] = list_pool(
                    self.runner, disk["pool"], disk.get("namespace"), f"live cluster {self.cluster}"
                )

    def listing_of(self, plan: Mapping[str, Any]) -> dict[str, list[str]]:
        return self.listings[pool_key(plan["source_pool"], plan["source_namespace"])]

    def plan_disk(self, disk: Mapping[str, Any]) -> dict[str, Any]:
        guest = disk["guest"]
        key = pool_key(disk["pool"], disk.get("namespace"))
        where = f"{guest_where(guest, disk.get('disk'))} image {key}/{disk['image']}"
        extra = {
            "source_pool": disk["pool"],
            "source_namespace": disk.get("namespace"),
            "disk": disk.get("disk"),
            "guest": {k: guest.get(k) for k in ("vmid", "name", "node", "type")},
        }
        failed = {"image": disk["image"], "backup_image": disk["backup_image"], **extra, "ok": False, "transfers": []}
        live = self.listings[key]
        if disk["image"] not in live:
            return {**failed, "error": f"{where}: not found on live cluster {self.cluster}"}
        try:
            profiles = parse_profiles(disk["profiles"]) if disk.get("profiles") else self.profiles
            wanted = self.settings.only_profiles
            only = None if wanted is None else [n for n in wanted if n in profiles]
            plan = self.settings.plan(
                disk["image"],
                disk["backup_image"],
                live[disk["image"]],
                self.p["backup_snapshots"].get(disk["backup_image"], []),
                profiles,
                only,
            )
        except (NamingError, PolicyError) as exc:
            return {**failed, "error": f"{where}: {exc}"}
        plan.update(extra)
        return plan

    def create(self, plan: dict[str, Any]) -> None:
        """One disk's snapshots (called by snapshot_guest, inside the guest's freeze)."""
        plan["created"] = []
        spec = ImageSpec(plan["source_pool"], plan["source_namespace"], plan["image"])
        where = guest_where(plan["guest"], plan["disk"])
        create_plan_snapshots(self.runner, plan, spec, self.listing_of(plan), where, plan["created"])

    # -- the API, needed only to freeze or to recheck a guest ----------------------------------

    def connect(self, plans: list[dict[str, Any]], recheck: set[str]) -> PveApi | None:
        p = self.p
        wants_freeze = any(plan["guest"] and plan.get("new_snapshots") for plan in plans) and any(
            d["guest"].get("freeze") for d in p["disks"]
        )
        if self.check_mode or not p["freeze"] or not (recheck or wants_freeze):
            return None
        if not p["api_host"] or not p["api_user"]:
            self.warnings.append("no api_host/api_user: guests are not frozen, snapshots are crash-consistent")
            return None
        if PROXMOXER_IMPORT_ERROR is not None:
            raise ModuleFailure(self.missing_lib, exception=PROXMOXER_IMPORT_ERROR)
        try:
            return ProxmoxerApi(PveAuth.from_params(p))
        except PveError as exc:
            self.warnings.append(f"{exc}: guests are not frozen, snapshots are crash-consistent")
            return None

    # -- the run ------------------------------------------------------------------------------

    def __call__(self) -> dict[str, Any]:
        p = self.p
        validate_snapshot_params(p)
        self.list_pools()
        plans = [self.plan_disk(disk) for disk in p["disks"]]
        to_create = [plan for plan in plans if plan.get("new_snapshots")]
        before = {plan["backup_image"]: list(self.listing_of(plan)[plan["image"]]) for plan in to_create}

        # Guests an earlier run could not confirm thawed, still running with their agent on here.
        pending_path = os.path.join(state_dir(p["state_dir"]), THAW_PENDING_FILE)
        pending = load_thaw_pending(pending_path, self.cluster)
        recheck = {str(d["guest"].get("vmid")) for d in p["disks"] if d["guest"].get("freeze")} & set(pending)
        if not p["freeze"]:
            recheck = set()
        api = self.connect(plans, recheck)

        by_guest: dict[Any, list[dict[str, Any]]] = {}
        guest_info: dict[Any, dict[str, Any]] = {}
        for disk, plan in zip_strict(p["disks"], plans):
            vmid = disk["guest"].get("vmid")
            by_guest.setdefault(vmid, []).append(plan)
            guest_info[vmid] = disk["guest"]
        agent_calls: dict[str, list[str]] = {}

        def handle(vmid: Any) -> tuple[list[str], list[str]]:
            notes, calls = snapshot_guest(
                guest_info[vmid],
                by_guest[vmid],
                self.create,
                api,
                p["hooks"] or {},
                p["hook_timeout"],
                p["freeze"],
                p["freeze_timeout"],
                thaw_timeout=p["thaw_timeout"],
                on_freeze_denied=p["on_freeze_denied"],
            )
            if api is not None and str(vmid) in recheck and not first_freeze(by_guest[vmid]):
                more, rechecked = recheck_thawed(
                    api, guest_info[vmid], by_guest[vmid], p["freeze_timeout"], p["thaw_timeout"]
                )
                notes, calls = notes + more, calls + rechecked
            return notes, calls

        def on_error(vmid: Any, exc: BaseException) -> tuple[list[str], list[str]]:
            for plan in by_guest[vmid]:
                if plan.get("ok"):
                    plan.update(ok=False, error=f"guest {vmid}: {exc}", transfers=[])
            return [], []

        if not self.check_mode and api is None:
            # Could not even ask: those guests stay "may be frozen", and this run says so again.
            for vmid in by_guest:
                if str(vmid) in recheck:
                    entry = pending[str(vmid)]
                    for plan in by_guest[vmid]:
                        plan["freeze"] = {
                            "state": "may-be-frozen",
                            "message": f"guest {vmid} ({guest_info[vmid].get('name')}) may be frozen since "
                            f"{entry.get('since')} and cannot be checked now (no usable API): {entry.get('message')}",
                        }
        elif self.check_mode:
            for vmid in sorted(recheck):
                self.warnings.append(
                    f"guest {vmid} may be frozen since {pending[vmid].get('since')}: {pending[vmid].get('message')}"
                )
        if not self.check_mode and (to_create or (recheck and api is not None)):
            outcomes = run_batch(list(by_guest), handle, int(p["workers"]), on_error=on_error)
            for vmid, (notes, calls) in zip_strict(by_guest, outcomes):
                self.warnings.extend(notes)
                if calls:
                    agent_calls[str(vmid)] = calls
            problem = remember_may_be_frozen(pending_path, self.cluster, pending, by_guest, guest_info)
            if problem:
                self.warnings.append(problem)
        for plan in plans:
            plan.pop("created", None)
        return self.result(plans, before, agent_calls, may_be_frozen(by_guest, guest_info))

    def result(
        self,
        plans: list[dict[str, Any]],
        before: dict[str, list[str]],
        agent_calls: dict[str, list[str]],
        frozen: list[dict[str, Any]],
    ) -> dict[str, Any]:
        planned_live, planned_backup = planned_maps(plans)
        live_snapshots = {
            plan["backup_image"]: self.listing_of(plan).get(plan["image"], [])
            for plan in plans
            if plan["image"] in self.listing_of(plan)
        }
        result: dict[str, Any] = {
            "changed": bool(planned_live),
            "images": plans,
            "live_snapshots": live_snapshots,
            "live_by_pool": self.listings,
            "planned_live": planned_live,
            "planned_backup": planned_backup,
            "agent_calls": agent_calls,
        }
        if self.diff_mode:
            new = {plan["backup_image"]: plan["new_snapshots"] for plan in plans if plan.get("new_snapshots")}
            result["diff"] = snapshot_diff(before, new)
        for warning in self.warnings:
            self.warn(warning)
        result["failed_images"] = failed_images(plans)
        result["may_be_frozen"] = frozen
        problems = [item["error"] for item in [*result["failed_images"], *frozen]]
        return fail_or_return(result, problems, self.p["fail_on_error"])
