#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Validate a backurne configuration before anything is touched
version_added: 0.1.0
description:
  - Checks the retention profiles, the snapshot prefix, every live cluster definition and the
    backup node configuration of a run, and returns them normalised.
  - Bad input fails with a message naming the culprit (the cluster, the profile, the key), so a
    playbook can run this first and stop before any snapshot is created.
  - Pure validation; runs anywhere (usually on the controller) and never changes anything.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.attributes
  - backurne.rbd.attributes.read_only
attributes:
  check_mode:
    description: Validation only; behaves the same in check mode.
options:
  profiles:
    description:
      - Retention profiles, as in the backup playbook's C(backurne_profiles).
    type: dict
    required: true
  snap_prefix:
    description: Snapshot prefix; may contain neither C(;) nor a quote.
    type: str
    default: backup
  live_clusters:
    description:
      - Live cluster definitions by inventory host name (the live node that serves them).
      - Keys per cluster are C(name) (label used in backup image names; defaults to the host
        name), C(type) (C(plain) or C(proxmox)), C(pool) (default C(rbd)), C(namespace),
        C(include) and C(exclude) (lists of shell patterns on image names), C(ceph) (dict of
        C(cluster), C(ceph_client), C(keyring), C(ceph_conf)) and C(workers).
    type: dict
    required: true
  backup_nodes:
    description: Inventory names of the backup nodes. At least one is required.
    type: list
    elements: str
    required: true
  backup:
    description:
      - The backup node configuration (C(backurne_backup)) with keys C(pool), C(namespace),
        C(ceph) and C(ssh) (C(user), C(port), C(identity_file), C(known_hosts_file), C(cipher),
        C(control_master)).
    type: dict
    default: {}
  limit_clusters:
    description: Only these live clusters (by name) are part of the run; each must exist.
    type: list
    elements: str
    default: []
  now:
    description:
      - The policy clock of the run (the playbooks' C(backurne_now)), an ISO 8601 time; a
        value that is not one fails here, naming the variable, before any cluster is touched.
    type: str
"""

EXAMPLES = r"""
- name: Check the configuration before touching anything
  backurne.rbd.preflight:
    profiles: "{{ backurne_profiles }}"
    snap_prefix: backup
    live_clusters:
      ceph-live-1:
        name: live1
        type: plain
        pool: rbd
    backup_nodes: "{{ groups['backup_nodes'] | default([]) }}"
  register: backurne_preflight
"""

RETURN = r"""
profiles:
  description: The profiles, normalised (interval in seconds).
  returned: success
  type: dict
  sample: {daily: {count: 30, interval: 86400, max_on_live: 0, priority: normal}}
live_clusters:
  description: The live clusters of this run, normalised, in inventory order.
  returned: success
  type: list
  elements: dict
  sample:
    - {host: ceph-live-1, name: live1, type: plain, pool: rbd, namespace: null, include: [], exclude: [], ceph: {}, workers: 4}
backup:
  description: The backup node configuration, normalised.
  returned: success
  type: dict
  sample: {pool: rbd, namespace: null, ceph: {}, ssh: {user: root, port: 22}}
now:
  description: O(now) as naive UTC ISO time (what the other modules will use), or null when not given.
  returned: success
  type: str
  sample: "2026-01-31T11:00:00"
started:
  description:
    - When these checks ran (seconds since the epoch, the controller's clock). This is the start
      of the run, which the report's duration counts from (one task less than a C(set_fact) of its own).
  returned: success
  type: float
  sample: 1767225600.125
"""

import time

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_now
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.run_config import (
    RUN_CONFIG_OPTIONS,
    secret_values,
    validate_run_config,
)


def main() -> None:
    module = create_module(
        "preflight",
        {
            "profiles": {"type": "dict", "required": True},
            "snap_prefix": {"type": "str", "default": "backup"},
            "live_clusters": {"type": "dict", "required": True},
            "backup_nodes": {"type": "list", "elements": "str", "required": True},
            "backup": {"type": "dict", "default": {}},
            "limit_clusters": {"type": "list", "elements": "str", "default": []},
            "now": {"type": "str"},
        },
        groups=(),
    )
    p = module.params
    # Proxmox API secrets arrive inside live_clusters: never echo them (invocation, messages).
    module.ansible.no_log_values.update(secret_values(p["live_clusters"]))

    def job() -> dict:
        try:
            config = validate_run_config(**{option: p[option] for option in RUN_CONFIG_OPTIONS})
            now = parse_now(p["now"]).isoformat() if p["now"] else None
        except ValueError as exc:  # ConfigError is one; parse_now's bad time too
            raise ModuleFailure(f"backurne configuration: {exc}") from None
        return {"changed": False, "now": now, "started": time.time(), **config}

    module.run(job)


if __name__ == "__main__":
    main()
