#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: check
short_description: Check that every image of a live cluster has a recent backup (Nagios style)
version_added: 0.1.0
description:
  - Runs on a backup node. Lists the live pool (over ssh) and the backup pool once each and
    reports, per live image, what leaves it unprotected - backurne's C(check), with the exit codes
    of a Nagios plugin in RV(status).
  - Critical C(no-backup) when an image has no backup image or none of our snapshots on it, unless
    the live image is younger than the shortest profile interval times O(grace_factor) (its first
    backup window has not passed). The creation time comes from C(rbd info) on the live node,
    asked only for the images without a backup; when unknown, the first time the check saw the
    image (history database) is used; unknown in both counts as old.
  - Critical C(transfer-failed) when the latest transfer of an image failed, as recorded by
    M(backurne.rbd.transfer) in the history database C(history.sqlite) of O(state_dir) on this
    node (the backup and check playbooks both run on the first backup node).
  - Critical C(may-be-frozen) when the last fsfreeze of a Proxmox guest was not confirmed undone
    (M(backurne.rbd.proxmox_snapshot)'s C(may_be_frozen), recorded in the same history database by
    M(backurne.rbd.transfer)); it stays until a later freeze of that guest is confirmed thawed.
  - Critical C(checksum-mismatch) when a backup snapshot of the image was found unequal to live
    and set aside by M(backurne.rbd.checksum) (history database), until a later successful
    transfer of the image (the next backup run re-sends it).
  - Critical C(faded-out) for a backup image whose live image is gone and that is still there
    O(expiry_grace) past its removal time (newest snapshot's expiry plus
    O(extra_retention_time)), or that holds none of our snapshots.
  - Critical C(no-shared-snapshot) when live and backup share no snapshot (the next backup would
    be a full one), critical C(too-old) when the newest backup snapshot of a profile is older than
    its interval times O(grace_factor), warning C(not-expired) when a backup snapshot is still
    present O(expiry_grace) past its expiry (not for a held snapshot, see C(playbooks/hold.yml);
    retention keeps it on purpose).
  - Read-only. Findings never fail the task (this is monitoring); an unreachable cluster gives
    RV(status) 3 (UNKNOWN). Only invalid options fail.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.attributes
  - backurne.rbd.policy
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.pool_pair
attributes:
  check_mode:
    support: full
    description: Read-only; checks in check mode too.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  live_cluster:
    description: Name of the live cluster (the IDENT of its backup images, C(NAME;IMAGE;None)).
    type: str
    required: true
  include:
    description: Shell patterns; when not empty, only live images matching one are checked.
    type: list
    elements: str
    default: []
  exclude:
    description: Shell patterns of live images not to check.
    type: list
    elements: str
    default: []
  grace_factor:
    description:
      - A profile's newest backup may be this many intervals old before it is critical (1.25 for
        C(daily) is 30 hours). Also the age below which a live image needs no backup yet.
    type: float
    default: 1.25
  expiry_grace:
    description: How long past its expiry a backup snapshot may remain before a warning.
    type: str
    default: 1d
  keep_min:
    description: The backup retention's C(keep_min); that many newest snapshots are never overdue.
    type: int
    default: 1
  extra_retention_time:
    description:
      - The backup retention's C(extra_retention_time) (a duration such as C(7d), or seconds),
        how long a backup image whose source is gone is kept past its newest snapshot's expiry.
    type: str
    default: "0"
  expected:
    description:
      - The live images to check, with their backup image names, instead of listing O(source_pool)
        and naming backups C(CLUSTER;IMAGE;None). For Proxmox guests, the C(disks) of
        M(backurne.rbd.proxmox_discover) fit as they are.
      - Keys used per item are C(image) and C(backup_image) (required), C(pool) and C(namespace)
        (the live pool, default O(source_pool) and O(source_namespace)), C(live_cluster),
        C(endpoint), and C(profiles) (the image's own profiles, instead of O(profiles)); other
        keys are ignored.
      - Items of another live cluster (C(live_cluster)) or, when O(endpoint) is set, of another
        endpoint are not checked here, but still count as expected.
      - Backup images seen earlier for this cluster (history) and no longer expected are checked
        as faded out.
    type: list
    elements: dict
  endpoint:
    description: With O(expected), check only the items whose C(endpoint) is this (the live node reached).
    type: str
  history:
    description:
      - Keep the first time each live image was seen, and read the transfer results, in
        C(history.sqlite) in O(state_dir). In check mode the history is read, not written.
    type: bool
    default: true
  state_dir:
    description: Directory of backurne's state on this node. Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
"""

EXAMPLES = r"""
- name: Check the backups of live cluster prod1
  backurne.rbd.check:
    live_cluster: prod1
    live_host: 10.0.10.5
    pool: backups
    live_ceph: {ceph_client: backurne}
    profiles: {daily: {count: 30}, weekly: {count: 4}}
  register: backurne_check

- name: Show the Nagios line
  ansible.builtin.debug:
    msg: "{{ backurne_check.line }}"
"""

RETURN = r"""
findings:
  description: One entry per problem, critical ones first within an image.
  returned: always
  type: list
  elements: dict
  contains:
    image:
      description: Live image name (the backup image name for C(faded-out)).
      type: str
    cluster:
      description: Live cluster name.
      type: str
    severity:
      description: C(critical) or C(warning).
      type: str
    code:
      description: >-
        C(no-backup), C(no-shared-snapshot), C(too-old), C(not-expired), C(transfer-failed),
        C(may-be-frozen), C(checksum-mismatch) or C(faded-out) (then RV(findings[].image) is the backup image name).
      type: str
    message:
      description: What is wrong, for a human.
      type: str
  sample:
    - {image: db1, cluster: prod1, severity: critical, code: no-backup, message: no backup (created 3d ago)}
status:
  description: Nagios exit code, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a cluster could not be read).
  returned: always
  type: int
  sample: 2
line:
  description: The one-line Nagios status text.
  returned: always
  type: str
  sample: "BACKURNE CRITICAL - 1 critical, 0 warning of 14 images: prod1/db1 no backup (created 3d ago)"
summary:
  description: RV(line) without its C(BACKURNE STATE - ) head, to combine several clusters.
  returned: always
  type: str
  sample: "14 images checked"
checked:
  description: Number of live images checked.
  returned: always
  type: int
  sample: 14
"""


from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.pool_pair import backup_and_live_runners
from ansible_collections.backurne.rbd.plugins.module_utils.report.health_job import (
    HealthCheckJob,
    health_settings,
    parse_expected,
)

OWN_OPTIONS = {
    "live_cluster": {"type": "str", "required": True},
    "include": {"type": "list", "elements": "str", "default": []},
    "exclude": {"type": "list", "elements": "str", "default": []},
    "grace_factor": {"type": "float", "default": 1.25},
    "expiry_grace": {"type": "str", "default": "1d"},
    "keep_min": {"type": "int", "default": 1},
    "extra_retention_time": {"type": "str", "default": "0"},
    "expected": {"type": "list", "elements": "dict"},
    "endpoint": {"type": "str"},
    "history": {"type": "bool", "default": True},
    "state_dir": {"type": "path"},
}


def main() -> None:
    module = create_module("check", OWN_OPTIONS, groups=("ceph", "ssh", "pool_pair", "policy"))
    p, shared = module.params, module.shared

    def job() -> dict:
        settings = health_settings(p, shared.prefix, shared.profiles, shared.now, module.check_mode)
        expected = None
        if p["expected"] is not None:
            expected = parse_expected(
                p["expected"], p["live_cluster"], p["endpoint"], p["source_pool"], p["source_namespace"]
            )
        backup, live = backup_and_live_runners(p)
        return HealthCheckJob(live, backup, settings, expected, warn=module.ansible.warn).run()

    module.run(job)


if __name__ == "__main__":
    main()
