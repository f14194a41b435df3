# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: image_records
short_description: Merge one live cluster's backup task results into per-image records
version_added: 0.1.0
description:
  - Takes the registered results of M(backurne.rbd.snapshot) (the input), M(backurne.rbd.transfer),
    M(backurne.rbd.checksum) and M(backurne.rbd.retention) (live, then backup side) and returns one
    record per image, for reports.
options:
  _input:
    description: The registered result of M(backurne.rbd.snapshot).
    type: dict
    required: true
  cluster:
    description: The live cluster name.
    type: str
    required: true
  transfer:
    description: The registered result of M(backurne.rbd.transfer).
    type: dict
  checksum:
    description: The registered result of M(backurne.rbd.checksum).
    type: dict
  retention_live:
    description: The registered result of M(backurne.rbd.retention) with side=live.
    type: dict
  retention_backup:
    description: The registered result of M(backurne.rbd.retention) with side=backup.
    type: dict
"""

EXAMPLES = r"""
- name: Build the records
  ansible.builtin.set_fact:
    records: "{{ snap | backurne.rbd.image_records('prod1', transfer=sent) }}"
"""

RETURN = r"""
_value:
  description: One record per image (cluster, image, backup_image, profiles, kind, status, bytes, duration, verified, expired counts, error).
  type: list
  elements: dict
"""

from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.report import image_records, report_lines


def _records(
    snapshot: dict[str, Any],
    cluster: str,
    transfer: dict[str, Any] | None = None,
    checksum: dict[str, Any] | None = None,
    retention_live: dict[str, Any] | None = None,
    retention_backup: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    def usable(result: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if not result or result.get("skipped") else result

    return image_records(
        cluster,
        usable(snapshot),
        usable(transfer),
        usable(checksum),
        usable(retention_live),
        usable(retention_backup),
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"image_records": _records, "report_lines": report_lines}
