#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: capacity
short_description: Check that the backup cluster can take writes into the backup pool
version_added: 0.1.0
description:
  - Reads the backup cluster's state once (the monitor's C(osd dump) and C(osd pool get-quota))
    and fails, naming the cause, when writes into O(pool) would block or fail - the cluster's
    FULL flag, a full OSD, the pool flagged full by the monitor, the pool's C(max_bytes) or
    C(max_objects) quota reached. Ceph holds writes into a full pool instead of failing them,
    so without this check a backup would hang or time out minutes later.
  - Nearly full (a nearfull or backfillfull OSD, the pool flagged nearfull, 90 % or more of a
    quota used) follows O(nearfull) - a warning by default.
  - The playbooks run it once per run on the first backup node, before any snapshot is taken.
  - Needs only C(mon 'profile rbd') caps (both commands are reads of the mon and osd services).
    Uses the in-process RADOS client when python3-rados is installed, else the C(ceph) CLI.
  - Checks first that O(keyring) and O(ceph_conf) exist on the node, naming the option.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.attributes
  - backurne.rbd.attributes.read_only
options:
  pool:
    description: The backup pool.
    type: str
    default: rbd
  nearfull:
    description:
      - What a nearly full cluster or pool does to the run - V(warn) (a warning, the run goes
        on) or V(fail) (the run stops like for a full pool).
    type: str
    choices: [warn, fail]
    default: warn
  writes:
    description:
      - Whether the run will write into the pool. False (an expiry-only run, which frees
        space) turns every finding into a warning.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each monitor answer.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Check that the backup pool can take the backups
  backurne.rbd.capacity:
    pool: rbd
    ceph_client: backurne
    keyring: /etc/ceph/ceph.client.backurne.keyring
    nearfull: warn
  run_once: true
"""

RETURN = r"""
state:
  description: What the backup cluster says about the pool.
  returned: success
  type: dict
  contains:
    pool:
      description: The pool.
      type: str
    cluster_flags:
      description: The OSD map's flags.
      type: list
      elements: str
    pool_flags:
      description: The pool's flags (C(full), C(full_quota), C(nearfull) are the ones read).
      type: list
      elements: str
    full_osds:
      description: Ids of the up and in OSDs in state full.
      type: list
      elements: int
    backfillfull_osds:
      description: Ids of the up and in OSDs in state backfillfull.
      type: list
      elements: int
    nearfull_osds:
      description: Ids of the up and in OSDs in state nearfull.
      type: list
      elements: int
    quota_max_bytes:
      description: The pool's byte quota (0 for none).
      type: int
    quota_max_objects:
      description: The pool's object quota (0 for none).
      type: int
    used_bytes:
      description: The pool's usage as the monitor counts it against the quota.
      type: int
    used_objects:
      description: The pool's object count.
      type: int
  sample:
    pool: rbd
    cluster_flags: [sortbitwise, recovery_deletes, purged_snapdirs, pglog_hardlimit]
    pool_flags: [hashpspool, selfmanaged_snaps]
    full_osds: []
    backfillfull_osds: []
    nearfull_osds: []
    quota_max_bytes: 0
    quota_max_objects: 0
    used_bytes: 1048576
    used_objects: 12
problems:
  description: Findings that fail the run (empty on success).
  returned: always
  type: list
  elements: str
  sample: []
capacity_warnings:
  description: Findings that only warn (also shown as task warnings).
  returned: success
  type: list
  elements: str
  sample: ["OSD(s) osd.0 of the backup cluster are nearfull"]
"""

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.capacity import NEARFULL_POLICIES, CapacityCheck
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import BACKUP_NODE, ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module


def main() -> None:
    module = create_module(
        "capacity",
        {
            "pool": {"type": "str", "default": "rbd"},
            "nearfull": {"type": "str", "choices": list(NEARFULL_POLICIES), "default": "warn"},
            "writes": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 30},
        },
        groups=("ceph",),
    )
    p = module.params

    def job() -> dict:
        runner = RbdRunner(ceph_access(p, owner=BACKUP_NODE))
        check = CapacityCheck(runner, p["pool"], nearfull=p["nearfull"], writes=p["writes"], timeout=p["timeout"])
        report = check.run()
        for warning in report.warnings:
            module.ansible.warn(warning)
        if report.failure:
            raise ModuleFailure(report.failure, **report.result)
        return {"changed": False, **report.result}

    module.run(job)


if __name__ == "__main__":
    main()
