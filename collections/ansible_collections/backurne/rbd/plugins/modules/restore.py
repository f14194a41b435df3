#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: restore
short_description: Restore backup snapshots as new images on a live cluster
version_added: 0.1.0
description:
  - Runs on a backup node. Streams a backup snapshot to the live node, the backup pipeline
    reversed - C(rbd export-diff | zstd | ssh LIVE "zstd -d | rbd import-diff") - into a new
    image created at the snapshot's size, then hashes the backup snapshot and the restored image
    and fails when they differ. Data never passes through the Ansible controller.
  - Never overwrites. An existing target fails the restore and changes nothing, unless O(force),
    in which case the current image is first renamed to C(TARGET.backurne-replaced-UTCTIME)
    (its data and snapshots intact) - refused while the image is in use (has watchers).
  - A failed restore removes the image it created and renames a replaced image back.
  - The export reads a temporary format-2 clone of the snapshot, so that backup retention
    running meanwhile cannot pull the data away, and the restored image gets no backup snapshot
    (which the next backup would wrongly take as its incremental base). The clone is removed at
    the end.
  - Every restore of the batch is validated (images, snapshots, target names, existing targets)
    before the first one starts; a bad request fails the task and nothing is touched.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
attributes:
  check_mode:
    support: full
    description: Validates the batch and returns the plan of each restore; nothing is created or renamed.
  diff_mode:
    support: full
    description: Shows each target image (and the name a replaced image is kept as) before and after.
options:
  pool:
    description: Backup pool holding the backup images.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside the backup pool.
    type: str
  image:
    description:
      - Backup image to restore, e.g. C(prod1;web1;None). One restore; use O(restores) for several.
    type: str
  snapshot:
    description:
      - Snapshot of O(image) to restore - an exact name (one of backurne's), C(latest), or
        C(before:ISOTIME) for the newest snapshot strictly older than that time (UTC when no offset).
    type: str
    default: latest
  target_image:
    description:
      - Name of the new image on the live cluster. Default C(DISK-restore-SNAPSHOTTIME), DISK being
        the second field of the backup image name, e.g. C(web1-restore-20261129T100000).
    type: str
  force:
    description:
      - Replace an existing target image. The current one is kept, renamed (see RV(restores[].kept_as)).
    type: bool
    default: false
  restores:
    description: Several restores in one task, instead of O(image).
    type: list
    elements: dict
    suboptions:
      image:
        description: Backup image.
        type: str
        required: true
      snapshot:
        description: Snapshot selector, as O(snapshot).
        type: str
        default: latest
      target_image:
        description: Target image name, as O(target_image).
        type: str
      force:
        description: As O(force).
        type: bool
        default: false
  target_pool:
    description: Pool on the live cluster the images are restored into.
    type: str
    default: rbd
  target_namespace:
    description: RBD namespace inside O(target_pool).
    type: str
  snap_prefix:
    description: Prefix of backurne's snapshots; only those can be restored.
    type: str
    default: backup
  compression:
    description: Compress the stream with zstd on the backup node.
    type: bool
    default: true
  compression_level:
    description: zstd level.
    type: int
    default: 1
  compression_threads:
    description: zstd threads (0 = one per core).
    type: int
    default: 0
  timeout:
    description:
      - Seconds the stream (and each checksum) of one restore may take before it fails (playbook
        variable C(backurne_transfer_timeout)).
    type: int
    default: 21600
  stall_timeout:
    description:
      - Seconds the stream may go without moving a byte before the restore is stopped and fails
        with C(no data moved for N s (stalled)) (e.g. a full live cluster blocking
        C(rbd import-diff)); C(0) turns the watch off. Playbook variable C(backurne_stall_timeout).
    type: int
    default: 300
  verify:
    description: Hash the backup snapshot and the restored image and fail the restore when they differ.
    type: bool
    default: true
  hasher:
    description: Command (argument list) reading the image on stdin and printing the hash first; on both nodes.
    type: list
    elements: str
    default: [xxhsum]
  workers:
    description: Restores run at once.
    type: int
    default: 1
"""

EXAMPLES = r"""
- name: Restore the newest backup of web1 as a new image on the live cluster
  backurne.rbd.restore:
    pool: backups
    ceph_client: backurne
    image: "prod1;web1;None"
    live_host: 10.0.10.5
    live_ceph: {ceph_client: backurne}
    ssh_identity_file: /root/.ssh/backurne_ed25519
    target_pool: rbd
  register: restored

- name: Put web1 back as it was before an incident, keeping the current image
  backurne.rbd.restore:
    pool: backups
    image: "prod1;web1;None"
    snapshot: "before:2026-11-29T08:00:00"
    target_image: web1
    force: true
    live_host: 10.0.10.5
"""

RETURN = r"""
restores:
  description: One result per restore, in input order.
  returned: always
  type: list
  elements: dict
  contains:
    image:
      description: Backup image, as requested.
      type: str
    status:
      description: C(restored), C(planned) (check mode) or C(failed).
      type: str
    ok:
      description: False when the restore failed.
      type: bool
    source:
      description: C(pool[/namespace]/image@snapshot) on the backup cluster.
      type: str
    snapshot:
      description: The snapshot the selector designated (null when it designates none).
      type: str
    target:
      description: C(pool[/namespace]/image) on the live cluster.
      type: str
    action:
      description: C(create) (a new image) or C(replace) (O(force), an existing image kept renamed).
      type: str
    created:
      description: The target image was created by this restore and holds the snapshot's data.
      type: bool
    kept_as:
      description: Name of the previous image after a replace (in check mode, the name it would get).
      type: str
    size_bytes:
      description: Size of the snapshot, and of the restored image.
      type: int
    bytes_logical:
      description: Bytes of the diff stream before compression.
      type: int
    bytes_wire:
      description: Bytes that crossed ssh.
      type: int
    duration:
      description: Seconds the restore took.
      type: float
    checksum_source:
      description: Hash of the backup snapshot.
      type: str
    checksum_target:
      description: Hash of the restored image.
      type: str
    failed_stage:
      description: C(validate), C(prepare), C(export), C(compress), C(ssh), C(import), C(stream) or C(verify).
      type: str
    error:
      description: Why it failed.
      type: str
    notes:
      description: What was cleaned up after a failure, and other remarks.
      type: list
      elements: str
    plan:
      description: The plan (check mode, or what the real run validated first).
      type: dict
  sample:
    - image: "prod1;web1;None"
      status: restored
      ok: true
      source: "backups/prod1;web1;None@backup;daily;30;2026-11-29T10:00:00.000000"
      snapshot: "backup;daily;30;2026-11-29T10:00:00.000000"
      target: rbd/web1-restore-20261129T100000
      action: create
      created: true
      kept_as: null
      size_bytes: 10737418240
      bytes_logical: 2147483648
      bytes_wire: 1073741824
      duration: 31.2
      checksum_source: 9f0c2b8e1d7a6c55
      checksum_target: 9f0c2b8e1d7a6c55
      failed_stage: null
      error: null
      notes: []
"""

from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import (
    RestoreError,
    RestorePlan,
    plan_restore,
    restore_snapshot,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression


def _result(request: dict[str, Any], plan: RestorePlan | None) -> dict[str, Any]:
    return {
        "image": request["image"],
        "status": "planned",
        "ok": True,
        "source": plan.source if plan else None,
        "snapshot": plan.snapshot if plan else None,
        "target": plan.target if plan else None,
        "action": plan.action if plan else None,
        "created": False,
        "kept_as": plan.kept_as if plan else None,
        "size_bytes": plan.size_bytes if plan else 0,
        "bytes_logical": 0,
        "bytes_wire": 0,
        "duration": 0.0,
        "checksum_source": None,
        "checksum_target": None,
        "failed_stage": None,
        "error": None,
        "notes": [],
        "plan": plan.to_dict() if plan else None,
    }


def _diff(results: list[dict[str, Any]]) -> dict[str, Any]:
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for item in results:
        plan = item["plan"]
        if not plan or not item["ok"]:
            continue
        target = plan["target"]
        if plan["target_exists"]:
            before[target] = {"exists": True, "size_bytes": plan["target_size_bytes"]}
            kept = "/".join(part for part in (plan["target_pool"], plan["target_namespace"], item["kept_as"]) if part)
            before[kept] = {"exists": False}
            after[kept] = {"exists": True, "size_bytes": plan["target_size_bytes"], "content": f"previous {target}"}
        else:
            before[target] = {"exists": False}
        after[target] = {"exists": True, "size_bytes": plan["size_bytes"], "content": plan["source"]}
    return {"before": before, "after": after}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **SSH_ARGS,
            "pool": {"type": "str", "default": "rbd"},
            "namespace": {"type": "str"},
            "image": {"type": "str"},
            "snapshot": {"type": "str", "default": "latest"},
            "target_image": {"type": "str"},
            "force": {"type": "bool", "default": False},
            "restores": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "image": {"type": "str", "required": True},
                    "snapshot": {"type": "str", "default": "latest"},
                    "target_image": {"type": "str"},
                    "force": {"type": "bool", "default": False},
                },
            },
            "target_pool": {"type": "str", "default": "rbd"},
            "target_namespace": {"type": "str"},
            "snap_prefix": {"type": "str", "default": "backup"},
            "compression": {"type": "bool", "default": True},
            "compression_level": {"type": "int", "default": 1},
            "compression_threads": {"type": "int", "default": 0},
            "timeout": {"type": "int", "default": 21600},
            "stall_timeout": {"type": "int", "default": 300},
            "verify": {"type": "bool", "default": True},
            "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
            "workers": {"type": "int", "default": 1},
        },
        mutually_exclusive=[("image", "restores")],
        required_one_of=[("image", "restores")],
        supports_check_mode=True,
    )
    p = module.params
    if p["workers"] < 1:
        module.fail_json(msg=f"restore: workers must be at least 1, got {p['workers']}")
    if p["timeout"] < 1:
        module.fail_json(msg=f"restore: timeout must be at least 1 second, got {p['timeout']}")
    if p["stall_timeout"] < 0:
        module.fail_json(msg=f"restore: stall_timeout must be at least 0 (0 = off), got {p['stall_timeout']}")
    if not p["hasher"]:
        module.fail_json(msg="restore: hasher must not be empty")
    try:
        compression = Compression(
            enabled=p["compression"], level=p["compression_level"], threads=p["compression_threads"]
        )
        live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    except ValueError as exc:
        module.fail_json(msg=f"restore: {exc}")
    backup = RbdRunner(ceph_access(p))
    if p["restores"] is not None:
        requests = [dict(item) for item in p["restores"]]
    else:
        requests = [
            {"image": p["image"], "snapshot": p["snapshot"], "target_image": p["target_image"], "force": p["force"]}
        ]
    if not requests:
        module.exit_json(changed=False, restores=[])
    now = datetime.now(UTC)

    def plan_one(request: dict[str, Any]) -> RestorePlan:
        return plan_restore(
            backup,
            live,
            p["pool"],
            p["namespace"],
            request["image"],
            request["snapshot"],
            p["target_pool"],
            p["target_namespace"],
            request["target_image"],
            request["force"],
            p["snap_prefix"],
            now,
        )

    # The whole batch is validated before anything is touched: a bad request changes nothing.
    results: list[dict[str, Any]] = []
    for request in requests:
        what = f"restore of {request['image']!r}@{request['snapshot']!r}"
        try:
            plan = plan_one(request)
        except (RestoreError, RbdError, ValueError) as exc:
            result = _result(request, None)
            result.update(status="failed", ok=False, failed_stage="validate", error=f"{what}: {exc}")
            results.append(result)
            continue
        results.append(_result(request, plan))
    targets = [r["target"] for r in results if r["target"]]
    duplicates = sorted({t for t in targets if targets.count(t) > 1})
    for result in results:
        if result["target"] in duplicates:
            result.update(
                status="failed",
                ok=False,
                failed_stage="validate",
                error=f"restore of {result['image']!r}: target {result['target']} is the target of several restores",
            )
    failed = [r for r in results if not r["ok"]]
    if failed:
        module.fail_json(msg="; ".join(r["error"] for r in failed), changed=False, restores=results)

    if not module.check_mode:

        def run_one(index: int) -> dict[str, Any]:
            request, planned = requests[index], results[index]
            done = restore_snapshot(
                backup,
                live,
                p["pool"],
                p["namespace"],
                request["image"],
                request["snapshot"],
                p["target_pool"],
                p["target_namespace"],
                request["target_image"],
                request["force"],
                compression,
                timeout=p["timeout"],
                snap_prefix=p["snap_prefix"],
                verify=p["verify"],
                hasher=p["hasher"],
                now=now,
                stall_timeout=p["stall_timeout"] or None,
            )
            result = {**planned, **done.to_dict(), "status": "restored" if done.ok else "failed"}
            if not done.ok:
                result["error"] = (
                    f"restore of {request['image']!r}@{request['snapshot']!r} onto {planned['target']}: {done.error}"
                )
            return result

        def on_error(index: int, exc: BaseException) -> dict[str, Any]:
            return {**results[index], "status": "failed", "ok": False, "failed_stage": "stream", "error": str(exc)}

        results = run_batch(list(range(len(requests))), run_one, p["workers"], on_error=on_error)

    # A check run predicts a change for every planned restore. A failed one undid what it did,
    # unless its notes say otherwise (the image it created or the renamed one still there).
    if module.check_mode:
        changed = any(r["ok"] for r in results)
    else:
        changed = any(r["ok"] or r["created"] or r["kept_as"] for r in results)
    output: dict[str, Any] = {"changed": changed, "restores": results}
    if module._diff:
        output["diff"] = _diff(results)
    failed = [r for r in results if not r["ok"]]
    if failed:
        module.fail_json(msg="; ".join(r["error"] for r in failed), **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
