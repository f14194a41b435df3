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
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.ssh
  - backurne.rbd.stream
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Validates the batch and returns the plan of each restore; nothing is created or renamed.
  diff_mode:
    support: full
    description: Shows each target image (and the name a replaced image is kept as) before and after.
options:
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

from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access, live_ssh_target
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore_job import (
    RestoreBatch,
    RestoreBatchFailed,
    RestoreSettings,
    restore_requests,
)

REQUEST_SPEC: dict[str, dict[str, Any]] = {
    "image": {"type": "str", "required": True},
    "snapshot": {"type": "str", "default": "latest"},
    "target_image": {"type": "str"},
    "force": {"type": "bool", "default": False},
}


def main() -> None:
    module = create_module(
        "restore",
        {
            **{key: {**value, "required": False} for key, value in REQUEST_SPEC.items()},
            "restores": {"type": "list", "elements": "dict", "options": REQUEST_SPEC},
            "target_pool": {"type": "str", "default": "rbd"},
            "target_namespace": {"type": "str"},
            "snap_prefix": {"type": "str", "default": "backup"},
            "verify": {"type": "bool", "default": True},
            "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
            "workers": {"type": "int", "default": 1},
        },
        groups=("ceph", "backup_pool", "ssh", "stream"),  # no fail_on_error: a failed restore always fails the task
        mutually_exclusive=[("image", "restores")],
        required_one_of=[("image", "restores")],
    )
    p, shared = module.params, module.shared

    def job() -> dict[str, Any]:
        requests = restore_requests(p)
        settings = RestoreSettings.from_params(p, stream=shared.stream, check_mode=module.check_mode)
        live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
        try:
            return RestoreBatch(RbdRunner(ceph_access(p)), live, settings).run(requests, diff=module.diff_mode)
        except RestoreBatchFailed as failed:
            raise ModuleFailure(failed.msg, **failed.output) from None

    module.run(job)


if __name__ == "__main__":
    main()
