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
  - backurne.rbd.snapshot_plan
  - backurne.rbd.proxmox
  - backurne.rbd.batch
  - backurne.rbd.attributes
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

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.snapshot_plan import PLAN_ARGS
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import HOOK_KINDS, ON_FREEZE_DENIED
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.snapshot_job import GuestSnapshotJob


def main() -> None:
    module = create_module(
        "proxmox_snapshot",
        {
            "live_cluster": {"type": "str", "required": True},
            "disks": {"type": "list", "elements": "dict", "required": True},
            **PLAN_ARGS,
            "freeze": {"type": "bool", "default": True},
            "freeze_timeout": {"type": "int", "default": 60},
            "thaw_timeout": {"type": "int", "default": 60},
            "on_freeze_denied": {"type": "str", "choices": list(ON_FREEZE_DENIED), "default": "fail"},
            "hooks": {"type": "dict", "default": {}, "options": {kind: {"type": "path"} for kind in HOOK_KINDS}},
            "hook_timeout": {"type": "int", "default": 600},
            "state_dir": {"type": "path"},
        },
        groups=("ceph", "policy", "batch", "proxmox"),
    )
    module.run(GuestSnapshotJob.for_module(module, missing_lib=missing_required_lib("proxmoxer")))


if __name__ == "__main__":
    main()
