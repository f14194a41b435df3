#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: transfer
short_description: Pull RBD snapshots from a live node into the backup cluster, incrementally
version_added: 0.1.0
description:
  - Runs on a backup node. For each image of a batch it streams
    C(ssh LIVE "rbd export-diff [--from-snap BASE] IMAGE@SNAP - | zstd") into
    C(zstd -d | rbd import-diff - BACKUP_IMAGE), one snapshot after the other, so only the changed
    extents travel. Data never passes through the Ansible controller.
  - Every stage's exit status is checked and stderr is never mixed into the stream; a failed image
    fails alone, the others continue.
  - A per-image RBD advisory lock on the backup image keeps two runs (or two backup nodes) from
    writing the same image; the second skips it and says so. A lock left by a dead run is broken
    once older than O(lock_ttl), or at once when its holder process is gone on this host.
  - The destination is created on the first full backup.
  - Before an incremental, a backup image whose HEAD differs from the base snapshot (written
    since, e.g. by hand, or holding a newer snapshot's data) is rolled back to that snapshot,
    and the image's C(note) says so. Foreign writes never reach a new backup snapshot.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.pool_pair
  - backurne.rbd.batch
  - backurne.rbd.shard
  - backurne.rbd.stream
  - backurne.rbd.lock
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Returns the transfers it would run (kind, base, snapshots) and transfers nothing.
  diff_mode:
    support: full
    description: Shows each changed backup image's snapshot set before and after.
options:
  snap_prefix:
    description: Prefix of backurne's snapshots.
    type: str
    default: backup
  plans:
    description:
      - The batch, as RV(backurne.rbd.snapshot#module:images) returns it. Keys used per item are
        C(image), C(backup_image), C(transfers) (list of C(from_snap)/C(to_snap), in order) and C(ok).
      - An item may carry C(source_pool) and C(source_namespace) (as M(backurne.rbd.proxmox_snapshot)
        returns them), which override O(source_pool) and O(source_namespace) for that image.
    type: list
    elements: dict
    required: true
  backup_snapshots:
    description:
      - The backup pool's listing taken earlier in the run (RV(backurne.rbd.info#module:snapshots)),
        backup image name to its snapshot names. When given, an image it lists is taken to exist
        and one it does not list is created at once, instead of one C(rbd info) per image to find
        out; the snapshots are still read again under the lock.
    type: dict
  progress:
    description:
      - While transferring, keep a status file C(progress-PID.json) in O(state_dir) (per worker
        image, snapshot, bytes done and expected, percentage, rate; rewritten at most once a
        second, removed at the end) and show the same in the process title (C(ps), C(top)).
      - The expected size comes from one C(rbd diff) on the live node, run beside a transfer
        still running one second after its start (a shorter one costs no extra ssh). Read it
        with C(backurne status). See C(docs/monitoring.md).
    type: bool
    default: true
  stream_engine:
    description:
      - The data path. C(cli) - per image and snapshot, C(ssh LIVE "rbd export-diff | zstd") into
        C(zstd -d | rbd import-diff) (processes per image, each C(rbd) a new cluster connection).
      - C(librbd) - the stream engine. One ssh channel per worker to one long-lived
        C(/usr/bin/python3) process on the live node that reads the diffs through python3-rbd and
        streams them (C(rbd export-diff) v1 format, zlib-compressed when O(compression) is on) for
        image after image; this process applies them through python3-rbd as C(rbd import-diff)
        would (same checks, same end snapshot). An image it cannot serve fails.
      - C(auto) - the engine, and the C(cli) path for an image the engine cannot serve before
        writing to it (no python3-rbd on either node, the live process not starting, an error
        before the first write); the image's C(note) says so. Playbook variable
        C(backurne_stream_engine).
    type: str
    choices: [cli, librbd, auto]
    default: cli


  window_end:
    description:
      - End of the backup window, an ISO 8601 time (UTC without an offset), as the
        P(backurne.rbd.window_end#filter) filter makes it from the playbook variable
        C(backurne_window_end) (C(06:00), C(06:00 Europe/Paris) or a timestamp).
      - No image starts its transfer at or after it; an image whose transfer has started
        finishes (all its snapshots). The images not started are returned with status
        C(deferred) (not failed, they count in neither RV(failed_images) nor a failed run),
        recorded in the history in O(state_dir), and start first in the next run.
      - The snapshots created on live for a deferred image stay there; they are no incremental
        base (that is the newest snapshot on both sides) and the next run sends them.
    type: str
  state_dir:
    description:
      - Directory of backurne's state on this node (progress files, and C(history.sqlite) where
        each image's last successful and failed transfer is recorded for
        M(backurne.rbd.check)). Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
"""

EXAMPLES = r"""
- name: Transfer the new snapshots from the live node
  backurne.rbd.transfer:
    pool: backups
    ceph_client: backurne
    live_host: 10.0.10.5
    live_ceph: {ceph_client: backurne}
    source_pool: rbd
    ssh_identity_file: /root/.ssh/backurne_ed25519
    ssh_cipher: aes128-gcm@openssh.com
    plans: "{{ snap.images }}"
  register: sent
"""

RETURN = r"""
images:
  description: One result per image of the batch, in input order.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: Live image name.
      type: str
    backup_image:
      description: Backup image name.
      type: str
    status:
      description:
        - C(transferred), C(planned) (check mode), C(up-to-date), C(locked) (another run holds it),
          C(deferred) (the backup window O(window_end) ended before its transfer started) or C(failed).
      type: str
    ok:
      description: False only when the image failed.
      type: bool
    kind:
      description: C(full), C(incremental) or C(none).
      type: str
    base:
      description: Snapshot the first diff started from (null for a full).
      type: str
    snapshots:
      description: Snapshots sent (or to send in check mode), in order.
      type: list
      elements: str
    snapshot:
      description: The last snapshot sent, null when none.
      type: str
    bytes_logical:
      description: Bytes of the diff streams before compression.
      type: int
    bytes_wire:
      description: Bytes that crossed ssh.
      type: int
    duration:
      description: Seconds spent transferring.
      type: float
    engine:
      description: C(librbd) when the stream engine moved (or failed to move) a snapshot of it, else C(cli).
      type: str
    error:
      description:
        - Why the image failed, naming the image, the snapshot, the stage and the cause (e.g.
          C(Operation not permitted writing to the backup cluster), C(no data moved for 300 s (stalled))).
        - An exit status 0 of C(rbd import-diff) is not trusted - refused writes on its stderr, or
          its end snapshot missing afterwards, fail the image too.
      type: str
    note:
      description:
        - Why the image was skipped (another run holds its lock) or other remarks, joined with
          C(; ) - a stale lock broken, an existing destination's HEAD emptied for a full, a
          snapshot that a failed transfer had left on the backup image removed.
      type: str
      returned: when there is something to say
  sample:
    - image: web1
      backup_image: "prod1;web1;None"
      status: transferred
      ok: true
      kind: incremental
      base: "backup;daily;30;2026-11-28T10:00:00.000000"
      snapshots: ["backup;daily;30;2026-11-29T10:00:00.000000"]
      snapshot: "backup;daily;30;2026-11-29T10:00:00.000000"
      bytes_logical: 12582912
      bytes_wire: 4194304
      duration: 1.8
      error: null
failed_images:
  description: Images that failed, with the reason.
  returned: always
  type: list
  elements: dict
deferred_images:
  description:
    - Images whose transfer the backup window (O(window_end)) kept from starting (C(image),
      C(backup_image)); they go first next run.
  returned: success
  type: list
  elements: dict
transfer_order:
  description:
    - Backup images whose transfer started, in the order the workers were handed them (the
      last run's deferred images first, then those with a high-priority profile).
  returned: success
  type: list
  elements: str
backup_snapshots:
  description:
    - Backup image name to its snapshot names after this run, for every backup image this node
      locked (read under the lock, plus what was sent). Merged over the run's listing, it is the
      backup pool's state after the transfers without listing the pool again.
    - Each list in Ceph's creation order (snapshot id ascending; what was sent appended).
  returned: success
  type: dict
"""

from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access, live_ssh_target
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.stream.backup_job import (
    TransferBatch,
    TransferSettings,
    parse_window_end,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import ProgressBoard, state_dir


def main() -> None:
    module = create_module(
        "transfer",
        {
            "snap_prefix": {"type": "str", "default": "backup"},
            "plans": {"type": "list", "elements": "dict", "required": True},
            "progress": {"type": "bool", "default": True},
            "state_dir": {"type": "path"},
            "backup_snapshots": {"type": "dict"},
            "stream_engine": {"type": "str", "default": "cli", "choices": ["cli", "librbd", "auto"]},
            "window_end": {"type": "str"},
        },
        groups=("ceph", "ssh", "pool_pair", "batch", "shard", "stream", "lock"),
    )
    p, shared = module.params, module.shared

    def job() -> dict[str, Any]:
        settings = TransferSettings.from_params(
            p,
            stream=shared.stream,
            lock_ttl=shared.lock_ttl,
            workers=shared.workers,
            shard_index=shared.shard_index,
            shard_count=shared.shard_count,
            check_mode=module.check_mode,
            state_dir=state_dir(p["state_dir"]),
            stream_engine=p["stream_engine"],
            window_end=parse_window_end(p["window_end"]),
        )
        live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
        board = ProgressBoard(state_dir(p["state_dir"])) if p["progress"] and not module.check_mode else None
        batch = TransferBatch(live, RbdRunner(ceph_access(p)), settings, p["backup_snapshots"], board)
        output = batch.run(p["plans"], diff=module.diff_mode)
        for warning in batch.warnings:
            module.ansible.warn(warning)
        if output["failed_images"] and p["fail_on_error"]:
            raise ModuleFailure("; ".join(item["error"] for item in output["failed_images"]), **output)
        return output

    module.run(job)


if __name__ == "__main__":
    main()
