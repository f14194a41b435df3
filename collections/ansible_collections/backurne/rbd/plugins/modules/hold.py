#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: hold
short_description: Pin or release backup snapshots (holds) on the backup cluster
version_added: 0.1.0
description:
  - A hold keeps a backup snapshot from backup-side retention (a legal hold, "keep until the
    incident is closed"). It is stored with the backup image as image-meta
    C(backurne.hold.SNAPSHOT) = C({"reason", "until", "by", "at"}), the same place the CLI
    (C(backurne hold)), the REST API and the web console read and write.
  - A hold past its O(holds[].until) counts as released; retention then treats the snapshot like any other.
  - Holds of snapshots not listed in O(holds) are left as they are.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Returns what would be held or released and changes nothing.
  diff_mode:
    support: none
    description: The result lists each hold set or released.
options:
  holds:
    description:
      - The holds to set (O(holds[].state=present)) or release (O(holds[].state=absent)).
      - Empty, the module only lists the holds of the pool (RV(current)).
    type: list
    elements: dict
    default: []
    suboptions:
      image:
        description: Backup image name C(IDENT;DISK;COMMENT).
        type: str
        required: true
      snapshot:
        description: Exact snapshot name, or C(latest) for the image's newest backurne snapshot.
        type: str
        required: true
      state:
        description: C(present) sets (or updates) the hold, C(absent) releases it.
        type: str
        choices: [present, absent]
        default: present
      reason:
        description: Why the snapshot is kept; required with O(holds[].state=present).
        type: str
      until:
        description: ISO date or time (UTC) the hold ends; omitted, the hold lasts until released.
        type: str
  by:
    description: Who asks for the holds (shown with each hold).
    type: str
    default: ansible
"""

EXAMPLES = r"""
- name: Keep the newest backup of web1 until the incident is closed
  backurne.rbd.hold:
    pool: backups
    holds:
      - image: "prod1;web1;None"
        snapshot: latest
        reason: "INC-4711"
"""

RETURN = r"""
holds:
  description: One entry per requested hold, in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: Backup image.
      type: str
    snapshot:
      description: The exact snapshot name.
      type: str
    action:
      description: C(held), C(updated), C(released), or C(unchanged) (already so).
      type: str
    hold:
      description: The hold now in place (C(reason), C(until), C(by), C(at)); null once released.
      type: dict
  sample:
    - {image: "prod1;web1;None", snapshot: "backup;daily;30;2026-11-29T10:00:00.000000", action: held,
       hold: {reason: INC-4711, until: null, by: ansible, at: "2026-12-03T14:00:00"}}
current:
  description: Every hold of the pool after the changes (one listing pass, read with the image headers).
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: Backup image.
      type: str
    snapshot:
      description: Held snapshot.
      type: str
    reason:
      description: Why it is kept.
      type: str
    until:
      description: When the hold ends; null until it is released by hand.
      type: str
    by:
      description: Who set it.
      type: str
    at:
      description: When it was set (UTC).
      type: str
    active:
      description: False once RV(current[].until) has passed (the hold counts as released).
      type: bool
  sample:
    - {image: "prod1;web1;None", snapshot: "backup;daily;30;2026-11-29T10:00:00.000000", reason: INC-4711,
       until: null, by: ansible, at: "2026-12-03T14:00:00", active: true}
"""

from datetime import datetime
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.holds import pin, read_holds, remove_hold
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    HOLD_KEY_PREFIX,
    HoldError,
    holds_from_metadata,
    new_hold,
)

HOLD_SPEC = {
    "image": {"type": "str", "required": True},
    "snapshot": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "reason": {"type": "str"},
    "until": {"type": "str"},
}


def _exact(runner: RbdRunner, spec: ImageSpec, snapshot: str) -> str:
    """The snapshot a request names (``latest``: the image's newest of ours)."""
    if snapshot != "latest":
        return snapshot
    ours = [name for name in runner.snapshot_names(spec) if ";" in name]
    if not ours:
        raise HoldError(f"backup image {spec} has no snapshot to hold")
    return ours[-1]


def _one(runner: RbdRunner, spec: ImageSpec, request: dict[str, Any], by: str, check: bool) -> dict[str, Any]:
    snapshot = _exact(runner, spec, request["snapshot"])
    current = read_holds(runner, spec).get(snapshot)
    now = datetime.now(UTC).replace(tzinfo=None)
    out: dict[str, Any] = {"image": spec.image, "snapshot": snapshot}
    if request["state"] == "absent":
        if current is not None and not check:
            remove_hold(runner, spec, snapshot)
        return {**out, "action": "released" if current else "unchanged", "hold": None}
    wanted = new_hold(snapshot, request["reason"], request["until"], by, now)  # validates before anything
    if current is not None and (current.reason, current.until) == (wanted.reason, wanted.until):
        return {**out, "action": "unchanged", "hold": current.to_dict()}
    if not check:
        pin(runner, spec, snapshot, request["reason"], request["until"], by, now)
    return {**out, "action": "updated" if current else "held", "hold": wanted.to_dict()}


def main() -> None:
    module = create_module(
        "hold",
        {
            "holds": {"type": "list", "elements": "dict", "default": [], "options": HOLD_SPEC},
            "by": {"type": "str", "default": "ansible"},
        },
        groups=("ceph", "backup_pool"),
    )
    p = module.params

    def job() -> dict[str, Any]:
        runner = RbdRunner(ceph_access(p))
        done = []
        for request in p["holds"]:
            try:
                spec = ImageSpec(p["pool"], p["namespace"], request["image"])
                done.append(_one(runner, spec, request, p["by"], module.check_mode))
            except (HoldError, RbdError, ValueError) as exc:
                raise ModuleFailure(
                    f"hold: image {request['image']!r} snapshot {request['snapshot']!r}: {exc}", holds=done
                ) from exc
        try:
            _listing, metas = runner.list_images_with_meta(p["pool"], p["namespace"], HOLD_KEY_PREFIX)
        except RbdError as exc:
            raise ModuleFailure(f"hold: cannot list the holds of pool {p['pool']}: {exc}", holds=done) from exc
        now = datetime.now(UTC).replace(tzinfo=None)
        current = [
            {"image": image, **hold.to_dict(now)}
            for image in sorted(metas)
            for hold in holds_from_metadata(metas[image]).values()
        ]
        return {"changed": any(item["action"] != "unchanged" for item in done), "holds": done, "current": current}

    module.run(job)


if __name__ == "__main__":
    main()
