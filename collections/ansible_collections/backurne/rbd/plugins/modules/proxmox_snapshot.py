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
    every path, also when a snapshot fails or the freeze fails or times out; the thaw is retried
    with backoff and confirmed with C(fsfreeze-status) for up to O(thaw_timeout) seconds. A guest
    not confirmed thawed by then is listed in RV(may_be_frozen) and fails the task (with
    O(fail_on_error)), after the other guests are done.
  - A guest whose agent is absent or does not answer is snapshotted crash-consistent, with a
    warning. A freeze the API refuses (HTTP 403, a user without the guest-agent privilege) follows
    O(on_freeze_denied). Stopped guests and containers are not frozen.
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
    description: Seconds one C(fsfreeze-freeze), C(fsfreeze-thaw) or C(fsfreeze-status) call may take.
    type: int
    default: 60
  thaw_timeout:
    description:
      - Seconds spent thawing a guest and confirming with C(fsfreeze-status) after a freeze attempt
        (retries with a pause growing from 0.5 to 5 s). At least one thaw and one status call are
        made; no round starts after this time, each call may take O(freeze_timeout).
      - A guest not confirmed thawed by then (still frozen, no answer, or a freeze of ours still
        unanswered) is reported in RV(may_be_frozen).
    type: int
    default: 60
  on_freeze_denied:
    description:
      - What to do when the API refuses C(fsfreeze-freeze) with HTTP 403 (the API user lacks
        C(VM.GuestAgent.FileSystemMgmt), or C(VM.Monitor) before PVE 9).
      - V(fail) snapshots nothing for that guest and fails its disks with a message naming the
        privilege; V(crash_consistent) snapshots it unfrozen with a warning.
      - An agent that is not configured or not running is not a refusal; it is always crash-consistent
        with a warning.
    type: str
    choices: [fail, crash_consistent]
    default: fail
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
    description: Fail the task when a disk failed or a guest may be frozen (the others are still handled).
    type: bool
    default: true
  state_dir:
    description:
      - Directory of backurne's state on this node. The guests a run could not confirm thawed are
        kept in C(pve-thaw-pending.json) there, and the next run thaws and verifies them even when
        nothing of theirs is due. Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
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
    freeze:
      description:
        - Present when a freeze of the disk's guest was attempted. C(state) is C(thawed) (confirmed
          by C(fsfreeze-status)), C(not-frozen) (the agent is absent or not running), C(denied)
          (HTTP 403) or C(may-be-frozen); C(message) says why for the last.
      type: dict
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
may_be_frozen:
  description:
    - Guests not confirmed thawed after their freeze, with C(vmid), C(name), C(node) and C(error)
      (the message naming the guest).
  returned: always
  type: list
  elements: dict
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    POLICY_ARGS,
    ceph_access,
    live_cluster_owner,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, validate_prefix
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    parse_profiles,
    plan_image,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    ON_FREEZE_DENIED,
    PROXMOXER_IMPORT_ERROR,
    THAW_PENDING_FILE,
    ProxmoxerApi,
    PveAuth,
    PveError,
    load_thaw_pending,
    recheck_thawed,
    save_thaw_pending,
    snapshot_guest,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import PVE_AUTH_ARGS, PVE_AUTH_TOGETHER
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir

HOOK_OPTIONS = {kind: {"type": "path"} for kind in ("pre_vm", "pre_disk", "post_disk", "post_vm")}


def pool_key(pool: str, namespace: str | None) -> str:
    return pool + (f"/{namespace}" if namespace else "")


def may_be_frozen(
    by_guest: dict[Any, list[dict[str, Any]]], guest_info: dict[Any, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The guests whose thaw was not confirmed, one entry each, named."""
    found = []
    for vmid, guest_plans in by_guest.items():
        freeze = next((plan["freeze"] for plan in guest_plans if plan.get("freeze")), None)
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
        freeze = next((plan["freeze"] for plan in guest_plans if plan.get("freeze")), None)
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
            "thaw_timeout": {"type": "int", "default": 60},
            "on_freeze_denied": {"type": "str", "choices": list(ON_FREEZE_DENIED), "default": "fail"},
            "hooks": {"type": "dict", "default": {}, "options": HOOK_OPTIONS},
            "hook_timeout": {"type": "int", "default": 600},
            "workers": {"type": "int", "default": 4},
            "fail_on_error": {"type": "bool", "default": True},
            "state_dir": {"type": "path"},
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
    for key in ("freeze_timeout", "thaw_timeout"):
        if p[key] < 1:
            module.fail_json(msg=f"proxmox_snapshot: {key} must be at least 1, got {p[key]}")
    for index, disk in enumerate(p["disks"]):
        missing = [k for k in ("image", "pool", "backup_image", "guest") if not disk.get(k)]
        if missing:
            module.fail_json(msg=f"proxmox_snapshot: disks[{index}] lacks {', '.join(missing)}")

    runner = RbdRunner(ceph_access(p, owner=live_cluster_owner(p["live_cluster"])))
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

    # Guests an earlier run could not confirm thawed, still running with their agent on here.
    pending_path = os.path.join(state_dir(p["state_dir"]), THAW_PENDING_FILE)
    pending = load_thaw_pending(pending_path, cluster)
    recheck = {str(d["guest"].get("vmid")) for d in p["disks"] if d["guest"].get("freeze")} & set(pending)
    if not p["freeze"]:
        recheck = set()
    needs_api = (
        not module.check_mode
        and p["freeze"]
        and (
            bool(recheck)
            or (
                any(plan["guest"] and plan.get("new_snapshots") for plan in plans)
                and any(d["guest"].get("freeze") for d in p["disks"])
            )
        )
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
        notes, calls = snapshot_guest(
            guest_info[vmid],
            by_guest[vmid],
            create,
            api,
            p["hooks"] or {},
            p["hook_timeout"],
            p["freeze"],
            p["freeze_timeout"],
            thaw_timeout=p["thaw_timeout"],
            on_freeze_denied=p["on_freeze_denied"],
        )
        if api is not None and str(vmid) in recheck and not any(plan.get("freeze") for plan in by_guest[vmid]):
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

    if not module.check_mode and api is None:
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
    elif module.check_mode:
        for vmid in sorted(recheck):
            warnings.append(
                f"guest {vmid} may be frozen since {pending[vmid].get('since')}: {pending[vmid].get('message')}"
            )
    if not module.check_mode and (to_create or (recheck and api is not None)):
        outcomes = run_batch(list(by_guest), handle, p["workers"], on_error=on_error)
        for vmid, (notes, calls) in zip(by_guest, outcomes, strict=True):
            warnings.extend(notes)
            if calls:
                agent_calls[str(vmid)] = calls
        problem = remember_may_be_frozen(pending_path, cluster, pending, by_guest, guest_info)
        if problem:
            warnings.append(problem)
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
    result["may_be_frozen"] = may_be_frozen(by_guest, guest_info)
    problems = [item["error"] for item in [*result["failed_images"], *result["may_be_frozen"]]]
    if problems and p["fail_on_error"]:
        module.fail_json(msg="; ".join(problems), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
