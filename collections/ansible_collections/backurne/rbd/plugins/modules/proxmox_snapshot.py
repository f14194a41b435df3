#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: proxmox_snapshot
short_description: Create the due backup snapshots of Proxmox VE guests' disks, frozen when the agent allows
version_added: 0.1.0
description:
  - Runs on the live Ceph node serving the disks (one endpoint of M(backurne.rbd.proxmox_discover)).
    Lists each pool/namespace once, plans each disk with its guest's profiles (as
    M(backurne.rbd.snapshot) does), and creates the due snapshots guest by guest.
  - For a running qemu guest whose agent is enabled with C(freeze-fs) on, the guest is frozen once
    (C(fsfreeze-freeze) through the API), all its due disks are snapshotted, and it is thawed on
    every path, also when a snapshot fails or the freeze times out. A guest whose agent does not
    answer is snapshotted crash-consistent, with a warning. Stopped guests and containers are not frozen.
  - Hooks C(pre_vm), C(pre_disk), C(post_disk), C(post_vm) run as C(HOOK KIND GUESTNAME DISK); a
    failing pre hook cancels its guest or disk with a warning carrying its output.
  - Returns the plans in the shape of M(backurne.rbd.snapshot), with C(source_pool) and
    C(source_namespace) per item for M(backurne.rbd.transfer).
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.policy
  - backurne.rbd.proxmox
attributes:
  check_mode:
    support: full
    description: Returns the plan with the snapshot names it would create; no snapshot, freeze or hook.
  diff_mode:
    support: full
    description: Shows each changed image's snapshot set before and after.
options:
  live_cluster:
    description: Name of the live cluster (for messages).
    type: str
    required: true
  disks:
    description: The disks of this endpoint, as RV(backurne.rbd.proxmox_discover#module:endpoints) lists them.
    type: list
    elements: dict
    required: true
  backup_snapshots:
    description: Snapshot names per backup image, as M(backurne.rbd.info) returns them.
    type: dict
    default: {}
  only_profiles:
    description: Only these profiles may become due in this run.
    type: list
    elements: str
  due_tolerance:
    description: How much earlier than its interval a profile becomes due (see M(backurne.rbd.snapshot)).
    type: str
    default: "0"
  force:
    description: Treat every profile of every guest as due.
    type: bool
    default: false
  create:
    description: Create the due snapshots; V(false) only reports the state (cleanup-only runs).
    type: bool
    default: true
  freeze:
    description: Freeze running qemu guests whose agent allows it around their snapshots.
    type: bool
    default: true
  freeze_timeout:
    description: Seconds a C(fsfreeze-freeze) or C(fsfreeze-thaw) call may take.
    type: int
    default: 60
  hooks:
    description: Executables run around the snapshots (absolute paths on this node).
    type: dict
    default: {}
    suboptions:
      pre_vm:
        description: Before anything is done to a guest with snapshots due; failure cancels the guest.
        type: path
      pre_disk:
        description: Before a disk's snapshots; failure cancels the disk.
        type: path
      post_disk:
        description: After a disk's snapshots (and the thaw).
        type: path
      post_vm:
        description: After the guest's snapshots.
        type: path
  hook_timeout:
    description: Seconds a hook may run before it is killed (and counts as failed).
    type: int
    default: 600
  workers:
    description: Guests handled at once.
    type: int
    default: 4
  fail_on_error:
    description: Fail the task when a disk failed (the others are still handled).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Snapshot the guests' disks served by this Ceph node
  backurne.rbd.proxmox_snapshot:
    live_cluster: pve-a
    ceph_client: backurne
    disks: "{{ pve.endpoints['ceph-a-client'] }}"
    backup_snapshots: "{{ backup_listing.snapshots }}"
    api_host: pve1.example.org
    api_user: backurne@pve
    api_token_id: backup
    api_token_secret: "{{ vault_pve_token_secret }}"
  delegate_to: ceph-a-client
  register: snap
"""

RETURN = r"""
images:
  description: The plan per disk, as RV(backurne.rbd.snapshot#module:images), plus the keys below.
  returned: success
  type: list
  elements: dict
  contains:
    source_pool:
      description: Pool of the disk on the live cluster.
      type: str
    source_namespace:
      description: Namespace of the disk, or null.
      type: str
    disk:
      description: Config key of the disk.
      type: str
    guest:
      description: vmid, name, node and type of the guest.
      type: dict
    note:
      description: Why a disk was cancelled (a pre hook said no).
      type: str
live_snapshots:
  description:
    - Every snapshot name per backup image of the disks handled (for backup-side expiry), each list
      in Ceph's creation order (oldest first; this run's snapshots appended).
  returned: success
  type: dict
live_by_pool:
  description: Every snapshot name per image, per C(pool/namespace) listed.
  returned: success
  type: dict
planned_live:
  description: Per live image, the snapshots this run creates (or would create).
  returned: success
  type: dict
planned_backup:
  description: Per backup image, the snapshots this run is to transfer.
  returned: success
  type: dict
agent_calls:
  description: Per guest vmid, the agent calls made (C(fsfreeze-freeze), C(fsfreeze-thaw)).
  returned: success
  type: dict
failed_images:
  description: Disks that failed, with the reason.
  returned: always
  type: list
  elements: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.backurne.rbd.plugins.module_utils.args import (
    CEPH_ARGS,
    POLICY_ARGS,
    ceph_access,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.naming import NamingError, validate_prefix
from ansible_collections.backurne.rbd.plugins.module_utils.policy import PolicyError, parse_profiles, plan_image
from ansible_collections.backurne.rbd.plugins.module_utils.pve_args import PVE_AUTH_ARGS, PVE_AUTH_TOGETHER
from ansible_collections.backurne.rbd.plugins.module_utils.pve_client import (
    PROXMOXER_IMPORT_ERROR,
    ProxmoxerApi,
    PveAuth,
    PveError,
    snapshot_guest,
)
from ansible_collections.backurne.rbd.plugins.module_utils.rbd import ImageSpec, RbdError, RbdRunner

HOOK_OPTIONS = {kind: {"type": "path"} for kind in ("pre_vm", "pre_disk", "post_disk", "post_vm")}


def pool_key(pool: str, namespace: str | None) -> str:
    return pool + (f"/{namespace}" if namespace else "")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **POLICY_ARGS,
            **PVE_AUTH_ARGS,
            "live_cluster": {"type": "str", "required": True},
            "disks": {"type": "list", "elements": "dict", "required": True},
            "backup_snapshots": {"type": "dict", "default": {}},
            "only_profiles": {"type": "list", "elements": "str"},
            "force": {"type": "bool", "default": False},
            "due_tolerance": {"type": "str", "default": "0"},
            "create": {"type": "bool", "default": True},
            "freeze": {"type": "bool", "default": True},
            "freeze_timeout": {"type": "int", "default": 60},
            "hooks": {"type": "dict", "default": {}, "options": HOOK_OPTIONS},
            "hook_timeout": {"type": "int", "default": 600},
            "workers": {"type": "int", "default": 4},
            "fail_on_error": {"type": "bool", "default": True},
        },
        required_together=PVE_AUTH_TOGETHER,
        supports_check_mode=True,
    )
    p = module.params
    try:
        prefix = validate_prefix(p["snap_prefix"])
        default_profiles = parse_profiles(p["profiles"])
        now = parse_now(p["now"])
        tolerance = parse_duration_or_zero(p["due_tolerance"])
    except (NamingError, PolicyError, ValueError) as exc:
        module.fail_json(msg=f"proxmox_snapshot: bad input: {exc}")
    if p["workers"] < 1:
        module.fail_json(msg=f"proxmox_snapshot: workers must be at least 1, got {p['workers']}")
    for index, disk in enumerate(p["disks"]):
        missing = [k for k in ("image", "pool", "backup_image", "guest") if not disk.get(k)]
        if missing:
            module.fail_json(msg=f"proxmox_snapshot: disks[{index}] lacks {', '.join(missing)}")

    runner = RbdRunner(ceph_access(p))
    cluster = p["live_cluster"]
    listings: dict[str, dict[str, list[str]]] = {}
    for disk in p["disks"]:
        key = pool_key(disk["pool"], disk.get("namespace"))
        if key in listings:
            continue
        try:
            listings[key] = runner.list_images(disk["pool"], disk.get("namespace"))
        except RbdError as exc:
            module.fail_json(msg=f"live cluster {cluster} pool {key}: cannot list images: {exc}")

    plans: list[dict[str, Any]] = []
    for disk in p["disks"]:
        guest = disk["guest"]
        key = pool_key(disk["pool"], disk.get("namespace"))
        where = f"guest {guest.get('vmid')} ({guest.get('name')}) disk {disk.get('disk')} image {key}/{disk['image']}"
        extra = {
            "source_pool": disk["pool"],
            "source_namespace": disk.get("namespace"),
            "disk": disk.get("disk"),
            "guest": {k: guest.get(k) for k in ("vmid", "name", "node", "type")},
        }
        live = listings[key]
        if disk["image"] not in live:
            plans.append(
                {
                    "image": disk["image"],
                    "backup_image": disk["backup_image"],
                    **extra,
                    "ok": False,
                    "error": f"{where}: not found on live cluster {cluster}",
                    "transfers": [],
                }
            )
            continue
        try:
            profiles = parse_profiles(disk["profiles"]) if disk.get("profiles") else default_profiles
            only = None if p["only_profiles"] is None else [n for n in p["only_profiles"] if n in profiles]
            plan = plan_image(
                disk["image"],
                disk["backup_image"],
                live[disk["image"]],
                p["backup_snapshots"].get(disk["backup_image"], []),
                profiles,
                prefix,
                now,
                force=p["force"],
                only=only,
                tolerance=tolerance,
            ).to_dict()
        except (NamingError, PolicyError) as exc:
            plans.append(
                {
                    "image": disk["image"],
                    "backup_image": disk["backup_image"],
                    **extra,
                    "ok": False,
                    "error": f"{where}: {exc}",
                    "transfers": [],
                }
            )
            continue
        if not p["create"]:
            plan.update(due=[], new_snapshots=[], transfers=[], kind="none")
        plan.update(extra, ok=True, error=None)
        plans.append(plan)

    to_create = [plan for plan in plans if plan.get("new_snapshots")]
    before = {
        plan["backup_image"]: list(listings[pool_key(plan["source_pool"], plan["source_namespace"])][plan["image"]])
        for plan in to_create
    }

    def create(plan: dict[str, Any]) -> None:
        live = listings[pool_key(plan["source_pool"], plan["source_namespace"])]
        plan["created"] = []
        for snap in plan["new_snapshots"]:
            try:
                runner.snap_create(ImageSpec(plan["source_pool"], plan["source_namespace"], plan["image"], snap))
            except RbdError as exc:
                created = set(live[plan["image"]])
                plan.update(
                    ok=False,
                    error=f"guest {plan['guest']['vmid']} ({plan['guest']['name']}) disk {plan['disk']}: snapshot {snap}: {exc}",
                )
                plan["transfers"] = [t for t in plan["transfers"] if t["to_snap"] in created]
                return
            live[plan["image"]] = [*live[plan["image"]], snap]
            plan["created"].append(snap)

    needs_api = (
        not module.check_mode
        and p["freeze"]
        and any(plan["guest"] and plan.get("new_snapshots") for plan in plans)
        and any(d["guest"].get("freeze") for d in p["disks"])
    )
    api = None
    warnings: list[str] = []
    if needs_api:
        if not p["api_host"] or not p["api_user"]:
            warnings.append("no api_host/api_user: guests are not frozen, snapshots are crash-consistent")
        elif PROXMOXER_IMPORT_ERROR is not None:
            module.fail_json(msg=missing_required_lib("proxmoxer"), exception=PROXMOXER_IMPORT_ERROR)
        else:
            try:
                api = ProxmoxerApi(PveAuth.from_params(p))
            except PveError as exc:
                warnings.append(f"{exc}: guests are not frozen, snapshots are crash-consistent")

    by_guest: dict[Any, list[dict[str, Any]]] = {}
    guest_info: dict[Any, dict[str, Any]] = {}
    for disk, plan in zip(p["disks"], plans, strict=True):
        vmid = disk["guest"].get("vmid")
        by_guest.setdefault(vmid, []).append(plan)
        guest_info[vmid] = disk["guest"]
    agent_calls: dict[str, list[str]] = {}

    def handle(vmid: Any) -> tuple[list[str], list[str]]:
        return snapshot_guest(
            guest_info[vmid],
            by_guest[vmid],
            create,
            api,
            p["hooks"] or {},
            p["hook_timeout"],
            p["freeze"],
            p["freeze_timeout"],
        )

    def on_error(vmid: Any, exc: BaseException) -> tuple[list[str], list[str]]:
        for plan in by_guest[vmid]:
            if plan.get("ok"):
                plan.update(ok=False, error=f"guest {vmid}: {exc}", transfers=[])
        return [], []

    if not module.check_mode and to_create:
        outcomes = run_batch(list(by_guest), handle, p["workers"], on_error=on_error)
        for vmid, (notes, calls) in zip(by_guest, outcomes, strict=True):
            warnings.extend(notes)
            if calls:
                agent_calls[str(vmid)] = calls
    for plan in plans:
        plan.pop("created", None)

    created = [plan for plan in plans if plan.get("new_snapshots")]
    planned_live = {plan["image"]: plan["new_snapshots"] for plan in created}
    planned_backup = {
        plan["backup_image"]: [t["to_snap"] for t in plan["transfers"]] for plan in plans if plan.get("transfers")
    }
    live_snapshots = {
        plan["backup_image"]: listings[pool_key(plan["source_pool"], plan["source_namespace"])].get(plan["image"], [])
        for plan in plans
        if plan["image"] in listings[pool_key(plan["source_pool"], plan["source_namespace"])]
    }
    result: dict[str, Any] = {
        "changed": bool(created),
        "images": plans,
        "live_snapshots": live_snapshots,
        "live_by_pool": listings,
        "planned_live": planned_live,
        "planned_backup": planned_backup,
        "agent_calls": agent_calls,
    }
    if module._diff:
        result["diff"] = {
            "before": dict(before),
            "after": {
                plan["backup_image"]: [*before[plan["backup_image"]], *plan["new_snapshots"]]
                for plan in created
                if plan["backup_image"] in before
            },
        }
    for warning in warnings:
        module.warn(warning)
    result["failed_images"] = [{"image": plan["image"], "error": plan["error"]} for plan in plans if not plan["ok"]]
    if result["failed_images"] and p["fail_on_error"]:
        module.fail_json(msg="; ".join(item["error"] for item in result["failed_images"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
