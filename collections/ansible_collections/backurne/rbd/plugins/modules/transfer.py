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
  - backurne.rbd.pool_pair
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
  compression:
    description: Compress the stream with zstd on the live node (on a WAN it pays; on one machine it costs).
    type: bool
    default: true
  compression_level:
    description: zstd level.
    type: int
    default: 1
  compression_threads:
    description: zstd threads on the live node (0 = one per core).
    type: int
    default: 0
  workers:
    description: Images transferred at once from this live cluster.
    type: int
    default: 4
  lock_ttl:
    description: Age (a duration such as C(6h), or seconds) after which another run's lock on a backup image counts as stale.
    type: str
    default: 6h
  timeout:
    description:
      - Seconds one snapshot's transfer may take before it is stopped and the image fails
        (playbook variable C(backurne_transfer_timeout)).
    type: int
    default: 21600
  stall_timeout:
    description:
      - Seconds the stream may go without moving a byte before the transfer is stopped and the
        image fails with C(no data moved for N s (stalled)), naming the stage it stopped at
        (e.g. C(import) when a full backup cluster blocks C(rbd import-diff)). C(0) turns the
        watch off (O(timeout) still applies). Playbook variable C(backurne_stall_timeout).
      - A healthy stream can be silent while C(rbd export-diff) scans a long unchanged stretch
        of a large image without the fast-diff feature; raise it for such images.
    type: int
    default: 300
  fail_on_error:
    description: Fail the task when an image failed (the others are still handled).
    type: bool
    default: true
  backup_snapshots:
    description:
      - The backup pool's listing taken earlier in the run (RV(backurne.rbd.info#module:snapshots)),
        backup image name to its snapshot names. When given, an image it lists is taken to exist
        and one it does not list is created at once, instead of one C(rbd info) per image to find
        out; the snapshots are still read again under the lock.
    type: dict
  shard_index:
    description:
      - This backup node's share when O(shard_count) nodes split the batch. An image belongs to
        shard C(sha256(backup_image)[:8] mod shard_count) (see C(docs/performance.md)); the
        others are left out of RV(images) (another node does them).
    type: int
    default: 0
  shard_count:
    description: Number of backup nodes splitting this batch (1 = this node does every image).
    type: int
    default: 1
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
      description: C(transferred), C(planned) (check mode), C(up-to-date), C(locked) (another run holds it) or C(failed).
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
backup_snapshots:
  description:
    - Backup image name to its snapshot names after this run, for every backup image this node
      locked (read under the lock, plus what was sent). Merged over the run's listing, it is the
      backup pool's state after the transfers without listing the pool again.
    - Each list in Ceph's creation order (snapshot id ascending; what was sent appended).
  returned: success
  type: dict
"""

import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import LockBusy, release, try_acquire
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    POOL_PAIR_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, parse_duration
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import (
    record_freeze_results,
    record_transfer_results,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.head_guard import reset_written_head
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import (
    ESTIMATE_DELAY,
    ProgressBoard,
    estimate_transfer_bytes,
    state_dir,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import (
    PLACEHOLDER_BYTES,
    Compression,
    transfer_snapshot,
)


def empty_result(plan: dict[str, Any]) -> dict[str, Any]:
    transfers = plan.get("transfers") or []
    return {
        "image": plan["image"],
        "backup_image": plan.get("backup_image"),
        "status": "up-to-date",
        "ok": True,
        "kind": "none" if not transfers else ("full" if transfers[0]["from_snap"] is None else "incremental"),
        "base": transfers[0]["from_snap"] if transfers else None,
        "snapshots": [],
        "snapshot": None,
        "bytes_logical": 0,
        "bytes_wire": 0,
        "duration": 0.0,
        "error": None,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **SSH_ARGS,
            **POOL_PAIR_ARGS,
            "snap_prefix": {"type": "str", "default": "backup"},
            "plans": {"type": "list", "elements": "dict", "required": True},
            "compression": {"type": "bool", "default": True},
            "compression_level": {"type": "int", "default": 1},
            "compression_threads": {"type": "int", "default": 0},
            "workers": {"type": "int", "default": 4},
            "lock_ttl": {"type": "str", "default": "6h"},
            "timeout": {"type": "int", "default": 21600},
            "stall_timeout": {"type": "int", "default": 300},
            "fail_on_error": {"type": "bool", "default": True},
            "progress": {"type": "bool", "default": True},
            "state_dir": {"type": "path"},
            "backup_snapshots": {"type": "dict"},
            "shard_index": {"type": "int", "default": 0},
            "shard_count": {"type": "int", "default": 1},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        lock_ttl = parse_duration(p["lock_ttl"])
    except PolicyError as exc:
        module.fail_json(msg=f"transfer: lock_ttl: {exc}")
    if p["workers"] < 1:
        module.fail_json(msg=f"transfer: workers must be at least 1, got {p['workers']}")
    if p["timeout"] < 1 or p["stall_timeout"] < 0:
        module.fail_json(
            msg=f"transfer: timeout must be at least 1 second and stall_timeout at least 0 (0 = off), "
            f"got timeout={p['timeout']} stall_timeout={p['stall_timeout']}"
        )
    if p["shard_count"] < 1 or not 0 <= p["shard_index"] < p["shard_count"]:
        module.fail_json(
            msg=f"transfer: shard_index must be in 0..shard_count-1 and shard_count >= 1, "
            f"got shard_index={p['shard_index']} shard_count={p['shard_count']}"
        )
    for index, plan in enumerate(p["plans"]):
        if not isinstance(plan.get("image"), str) or not isinstance(plan.get("backup_image", ""), str):
            module.fail_json(msg=f"transfer: plans[{index}] has no image name")
    # This node's share of the batch.
    plans = [
        plan
        for plan in p["plans"]
        if in_shard(str(plan.get("backup_image") or plan["image"]), p["shard_index"], p["shard_count"])
    ]
    listed: dict[str, list[str]] | None = p["backup_snapshots"]

    backup = RbdRunner(ceph_access(p))
    live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    compression = Compression(enabled=p["compression"], level=p["compression_level"], threads=p["compression_threads"])
    dst_pool, dst_ns = p["pool"], p["namespace"]
    prefix = p["snap_prefix"] + ";"
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    board = ProgressBoard(state_dir(p["state_dir"])) if p["progress"] and not module.check_mode else None

    def transfer_image(plan: dict[str, Any]) -> dict[str, Any]:
        result = empty_result(plan)
        transfers = [t for t in plan.get("transfers") or [] if str(t.get("to_snap", "")).startswith(prefix)]
        if not plan.get("ok", True) or not transfers:
            return result
        dest = plan["backup_image"]
        if module.check_mode:
            result.update(status="planned", snapshots=[t["to_snap"] for t in transfers])
            result["snapshot"] = result["snapshots"][-1]
            return result
        where = f"image {plan['image']!r} -> backup image {dest!r}"
        # A plan may name its own source (Proxmox disks live in several pools and namespaces).
        src_pool = plan.get("source_pool") or p["source_pool"]
        src_ns = plan.get("source_namespace") if "source_pool" in plan else p["source_namespace"]
        started = time.monotonic()
        dest_spec = ImageSpec(dst_pool, dst_ns, dest)
        created = False

        def create_placeholder() -> bool:
            # The lock lives in the image header: a placeholder (resized by import-diff) comes first.
            try:
                backup.create(dest_spec, PLACEHOLDER_BYTES)
            except RbdError as exc:
                if not exc.is_exists:  # another run or backup node created it just now: fine
                    raise
                return False
            return True

        if listed is not None:
            # The run's listing says whether it exists: no `rbd info` per image to find out.
            if dest not in listed:
                created = create_placeholder()
        elif not backup.exists(dest_spec):
            created = create_placeholder()
        try:
            lock = try_acquire(backup, dst_pool, dst_ns, dest, ttl=lock_ttl, now=parse_now(None))
        except RbdError as exc:
            if not (exc.is_not_found and listed is not None and dest in listed):
                raise
            # Removed since the listing (e.g. expired by a concurrent run): start it again.
            created = create_placeholder()
            lock = try_acquire(backup, dst_pool, dst_ns, dest, ttl=lock_ttl, now=parse_now(None))
        if isinstance(lock, LockBusy):
            result.update(status="locked", error=None, note=f"{where}: skipped, locked by {lock.holder}")
            return result
        notes: list[str] = []
        if lock.broke_stale:
            notes.append(f"{where}: broke a stale lock ({lock.broke_stale})")
        try:
            listed_now = backup.snapshot_names(dest_spec)  # Ceph's creation order, kept as is
            present = set(listed_now)
            before[dest] = list(listed_now)
            after[dest] = list(listed_now)
            # Still the empty placeholder this call created (nobody wrote into it between its
            # creation and the lock: same size, no snapshot): a full needs no emptying first.
            fresh = created and not present and lock.size == PLACEHOLDER_BYTES
            todo = [t for t in transfers if t["to_snap"] not in present]
            if not todo:
                return result  # another run delivered them while we waited
            if todo[0]["from_snap"] is not None and todo[0]["from_snap"] not in present:
                result.update(
                    status="failed",
                    ok=False,
                    error=f"{where}: base snapshot {todo[0]['from_snap']!r} is missing on the backup cluster",
                )
                return result
            if todo[0]["from_snap"] is not None:
                # HEAD guard: the diff must land on the base's content, nothing else.
                reset = reset_written_head(backup, dest_spec, todo[0]["from_snap"], timeout=p["timeout"])
                if reset:
                    result["note"] = "; ".join(filter(None, [result.get("note"), reset]))
            result.update(
                kind="full" if todo[0]["from_snap"] is None else "incremental",
                base=todo[0]["from_snap"],
            )
            for step in todo:
                tracker = None
                if board is not None:
                    tracker = board.start(plan["image"], plan["image"], step["to_snap"], dest, result["kind"])
                    src_spec = ImageSpec(src_pool, src_ns, plan["image"])
                    tracker.estimate_in_background(
                        lambda s=src_spec, t=step: estimate_transfer_bytes(live, s, t["to_snap"], t["from_snap"]),
                        delay=ESTIMATE_DELAY,
                    )
                sent = transfer_snapshot(
                    live,
                    backup,
                    src_pool,
                    src_ns,
                    plan["image"],
                    step["to_snap"],
                    step["from_snap"],
                    dst_pool,
                    dst_ns,
                    dest,
                    compression,
                    timeout=p["timeout"],
                    progress=tracker.update if tracker is not None else None,
                    fresh_destination=fresh and step["from_snap"] is None,
                    stall_timeout=p["stall_timeout"] or None,
                    snap_prefix=p["snap_prefix"],
                    present=present,
                )
                # The pipeline's remarks (HEAD emptied, a failed step's snapshot removed…).
                notes.extend(f"{where}: snapshot {step['to_snap']!r}: {note}" for note in sent.notes)
                if board is not None:
                    board.finish(plan["image"])
                result["bytes_logical"] += sent.bytes_logical
                result["bytes_wire"] += sent.bytes_wire
                if not sent.ok:
                    if fresh and step["from_snap"] is None:
                        after.pop(dest, None)  # the failed full removed its placeholder
                    result.update(
                        status="failed",
                        ok=False,
                        error=f"{where}: snapshot {step['to_snap']!r}: {sent.failed_stage} failed: {sent.error}",
                    )
                    break
                present.add(step["to_snap"])
                result["snapshots"].append(step["to_snap"])
                result["snapshot"] = step["to_snap"]
                after[dest] = [*after[dest], step["to_snap"]]  # the newest: appended
            else:
                result["status"] = "transferred"
        finally:
            result["duration"] = round(time.monotonic() - started, 3)
            if notes:
                result["note"] = "; ".join(notes)
            release(backup, lock)
        return result

    def on_error(plan: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        result = empty_result(plan)
        result.update(status="failed", ok=False, error=f"image {plan.get('image')!r}: {exc}")
        return result

    # An exception (an rbd call failing outside a transfer) fails only its own image.
    # Images with a high-priority profile (the snapshot module marks them) start first; the
    # results stay in input order.
    ordered = priority_order(plans)
    try:
        batch = run_batch(ordered, transfer_image, p["workers"], on_error=on_error)
    finally:
        if board is not None:
            board.close()
    done = dict(zip(map(id, ordered), batch, strict=True))
    results = [done[id(plan)] for plan in plans]
    if not module.check_mode:
        # The check (same node) reports an image whose last attempt failed, between runs. A plan
        # that failed on the live side (snapshot) is a failed attempt too.
        plan_failures = [
            {**plan, "status": "failed"} for plan in plans if not plan.get("ok", True) and plan.get("error")
        ]
        problem = record_transfer_results(state_dir(p["state_dir"]), [*results, *plan_failures], parse_now(None))
        if problem:
            module.warn(problem)
        # Proxmox guests: the outcome of their fsfreeze (the plans' `freeze`), for the check.
        problem = record_freeze_results(state_dir(p["state_dir"]), plans, parse_now(None))
        if problem:
            module.warn(problem)

    moved = [r for r in results if r["snapshots"]]
    output: dict[str, Any] = {
        "changed": bool(moved),
        "images": results,
        "failed_images": [{"image": r["image"], "error": r["error"]} for r in results if not r["ok"]],
        "backup_snapshots": after,
    }
    if module._diff:
        output["diff"] = {
            "before": {r["backup_image"]: before.get(r["backup_image"], []) for r in moved},
            "after": {r["backup_image"]: [*before.get(r["backup_image"], []), *r["snapshots"]] for r in moved},
        }
    if output["failed_images"] and p["fail_on_error"]:
        module.fail_json(msg="; ".join(item["error"] for item in output["failed_images"]), **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
