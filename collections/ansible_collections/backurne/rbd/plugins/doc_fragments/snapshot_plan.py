# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # What shapes a snapshot run's plan (module_utils/policy/snapshot_plan.py PLAN_ARGS), shared by
    # snapshot and proxmox_snapshot.
    DOCUMENTATION = r"""
options:
  backup_snapshots:
    description:
      - Snapshot names per backup image, as returned by M(backurne.rbd.info) in RV(backurne.rbd.info#module:snapshots).
    type: dict
    default: {}
  only_profiles:
    description: Only these profiles may become due in this run.
    type: list
    elements: str
  due_tolerance:
    description:
      - How much earlier than its interval a profile becomes due (a duration such as C(5m), or
        seconds; at most half the interval). Keeps a run scheduled every hour from skipping an
        hour when it starts a few seconds earlier than the previous one.
    type: str
    default: "0"
  force:
    description: Treat every profile (of every selected image or guest) as due.
    type: bool
    default: false
  create:
    description:
      - Create the due snapshots. V(false) only reports the state and the plan (cleanup-only runs).
    type: bool
    default: true
"""
