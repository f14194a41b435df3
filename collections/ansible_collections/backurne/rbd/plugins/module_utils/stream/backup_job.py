# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The transfer module's job: a batch of images, each pulled snapshot after snapshot from the
# live node into its backup image (transfer.py streams one snapshot). Per image: the placeholder
# that carries the lock, the lock, the HEAD guard, the progress board, and the bookkeeping of
# what the backup image held before and after; per batch: the shard, the priority order, the
# history for the check, and the result (diff, failed images). No Ansible import: the module is
# a face over TransferBatch.
#
# The backup window (window_end): no image starts its transfer after it; an image already
# started finishes (all its snapshots: the second profile's diff is nearly free). The images
# not started are `deferred` (ok, not failed), recorded in the history, and go first next run.
# The snapshots the run created on live for them stay there: live-only, they are no base (the
# base is the newest snapshot on BOTH sides), retention keeps or expires them as usual, and the
# next run sends them as pending transfers.
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import Lock, LockBusy, release, try_acquire
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC, parse_isoformat, zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_now
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import (
    deferred_images,
    record_freeze_results,
    record_transfer_results,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.engine import ENGINES, StreamEngine
from ansible_collections.backurne.rbd.plugins.module_utils.stream.head_guard import reset_written_head
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import (
    ESTIMATE_DELAY,
    ProgressBoard,
    estimate_transfer_bytes,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import NodeThrottle
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import (
    PLACEHOLDER_BYTES,
    StreamOptions,
    TransferResult,
    transfer_snapshot,
)


@dataclass(frozen=True)
class TransferSettings:
    """The options of one transfer batch, validated (module_base/factory.py)."""

    pool: str
    namespace: str | None
    source_pool: str
    source_namespace: str | None
    snap_prefix: str
    stream: StreamOptions
    lock_ttl: timedelta
    workers: int
    shard_index: int = 0
    shard_count: int = 1
    check_mode: bool = False
    state_dir: Path | None = None  # where the history is recorded (None: nothing recorded)
    # The data path: "cli" (process pipeline per image), "librbd" (stream/engine.py; an image it
    # cannot serve fails), "auto" (the engine, the CLI pipeline where it cannot serve an image).
    stream_engine: str = "cli"

    # The backup window's end (naive UTC): no image starts its transfer after it (None: no window).
    window_end: datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **derived: Any) -> TransferSettings:
        """The module's own options as they are; ``derived``: the validated ones (stream, lock_ttl, ...)."""
        own = ("pool", "namespace", "source_pool", "source_namespace", "snap_prefix")
        return cls(**{key: params[key] for key in own}, **derived)


def parse_window_end(value: str | None) -> datetime | None:
    """The transfer module's ``window_end``: an ISO 8601 time, naive UTC unless it has an offset
    (the backurne.rbd.window_end filter gives naive UTC); None for none. ValueError naming it."""
    if value is None or not value.strip():
        return None
    try:
        parsed = parse_isoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"window_end {value!r} is not an ISO 8601 time (e.g. 2026-12-04T05:00:00 for UTC); playbooks set it "
            "from backurne_window_end through the backurne.rbd.window_end filter"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def empty_result(plan: Mapping[str, Any]) -> dict[str, Any]:
    """An image's result before anything was sent (also what an up-to-date image returns)."""
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
        "engine": "cli",
    }


def check_plans(plans: Sequence[Mapping[str, Any]]) -> None:
    """ValueError naming the first plan without an image name (nothing has been touched yet)."""
    for index, plan in enumerate(plans):
        if not isinstance(plan.get("image"), str) or not isinstance(plan.get("backup_image", ""), str):
            raise ValueError(f"plans[{index}] has no image name")


def plan_source(plan: Mapping[str, Any], source_pool: str, source_namespace: str | None) -> tuple[str, str | None]:
    """The live pool and namespace of a plan: its own (Proxmox disks live in several pools and
    namespaces; its namespace goes with its pool), else the options'."""
    if "source_pool" in plan:
        return plan.get("source_pool") or source_pool, plan.get("source_namespace")
    return source_pool, source_namespace


class TransferBatch:
    """Pulls a batch of plans (RV(backurne.rbd.snapshot#module:images)) into the backup pool.

    ``listed``: the run's backup pool listing (backup image -> snapshot names), which says
    whether a backup image exists without an ``rbd info`` per image. ``board``: the progress
    board (None: no progress files). After run(), ``before``/``after`` hold each locked backup
    image's snapshots (Ceph's creation order; what was sent appended) and ``warnings`` what the
    history could not record. ``clock``: the time the backup window is checked against (naive
    UTC; injectable for tests). After run(), ``order`` holds the backup images whose transfer
    started, in the order the workers were handed them (the last run's deferred ones first).
    """

    def __init__(
        self,
        live: RbdRunner,
        backup: RbdRunner,
        settings: TransferSettings,
        listed: dict[str, list[str]] | None = None,
        board: ProgressBoard | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.live = live
        self.backup = backup
        self.settings = settings
        self.listed = listed
        self.board = board
        self.clock = clock or (lambda: parse_now(None))
        # The bandwidth limit: a bucket per stream, and the node total shared by every worker.
        self.throttles = NodeThrottle(settings.stream.bwlimit)
        self.order: list[str] = []
        self.before: dict[str, list[str]] = {}
        self.after: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        if settings.stream_engine not in ENGINES:
            raise ValueError(f"stream_engine must be one of {', '.join(ENGINES)}, got {settings.stream_engine!r}")
        self.engine: StreamEngine | None = None
        if settings.stream_engine != "cli" and not settings.check_mode:
            stream = settings.stream
            self.engine = StreamEngine(live, backup, stream.compression.enabled, stream.stall_timeout)

    # -- the batch ------------------------------------------------------------------------

    def run(self, all_plans: Sequence[Mapping[str, Any]], diff: bool = False) -> dict[str, Any]:
        """Transfer this node's share of the plans; the module's result (without `failed`)."""
        check_plans(all_plans)
        s = self.settings
        plans = [
            plan
            for plan in all_plans
            if in_shard(str(plan.get("backup_image") or plan["image"]), s.shard_index, s.shard_count)
        ]
        results = self._transfer_all(plans)
        if not s.check_mode and s.state_dir is not None:
            self._record(plans, results, s.state_dir)
        moved = [r for r in results if r["snapshots"]]
        output: dict[str, Any] = {
            "changed": bool(moved),
            "images": results,
            "failed_images": [{"image": r["image"], "error": r["error"]} for r in results if not r["ok"]],
            "deferred_images": [
                {"image": r["image"], "backup_image": r["backup_image"]} for r in results if r["status"] == DEFERRED
            ],
            "transfer_order": self.order,
            "backup_snapshots": self.after,
        }
        if diff:
            output["diff"] = {
                "before": {r["backup_image"]: self.before.get(r["backup_image"], []) for r in moved},
                "after": {r["backup_image"]: [*self.before.get(r["backup_image"], []), *r["snapshots"]] for r in moved},
            }
        return output

    def _transfer_all(self, plans: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        # An exception (an rbd call failing outside a transfer) fails only its own image.
        # The images the last run deferred (the history says which) start first, then those
        # with a high-priority profile (the snapshot module marks them); the results stay in
        # input order.
        deferred: set[str] = set()
        if self.settings.state_dir is not None:
            deferred, problem = deferred_images(self.settings.state_dir)
            if problem:
                self.warnings.append(problem)
        ordered = priority_order(plans, deferred)
        try:
            batch = run_batch(ordered, self.transfer_image, self.settings.workers, on_error=_failed_by)
        finally:
            if self.board is not None:
                self.board.close()
            if self.engine is not None:
                self.engine.close()
        done = dict(zip_strict(map(id, ordered), batch))
        # The order the workers were handed the images in, of those whose transfer started.
        started = ("transferred", "failed", "locked", "planned")
        self.order = [str(result["backup_image"]) for result in batch if result["status"] in started]
        return [done[id(plan)] for plan in plans]

    def _record(self, plans: list[Mapping[str, Any]], results: list[dict[str, Any]], where: Path) -> None:
        # The check (same node) reports an image whose last attempt failed, between runs. A plan
        # that failed on the live side (snapshot) is a failed attempt too.
        plan_failures = [
            {**plan, "status": "failed"} for plan in plans if not plan.get("ok", True) and plan.get("error")
        ]
        problem = record_transfer_results(where, [*results, *plan_failures], parse_now(None))
        if problem:
            self.warnings.append(problem)
        # Proxmox guests: the outcome of their fsfreeze (the plans' `freeze`), for the check.
        problem = record_freeze_results(where, plans, parse_now(None))
        if problem:
            self.warnings.append(problem)

    # -- one image ------------------------------------------------------------------------

    def window_closed(self) -> bool:
        """The backup window has ended: no transfer starts any more."""
        end = self.settings.window_end
        return end is not None and self.clock() >= end

    def transfer_image(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        result = empty_result(plan)
        prefix = self.settings.snap_prefix + ";"
        transfers = [t for t in plan.get("transfers") or [] if str(t.get("to_snap", "")).startswith(prefix)]
        if not plan.get("ok", True) or not transfers:
            return result
        dest = plan["backup_image"]
        if self.window_closed():
            result.update(
                status=DEFERRED,
                snapshots=[],
                note=f"deferred: the backup window ended at {self.settings.window_end} UTC before its transfer started",
            )
            return result
        if self.settings.check_mode:
            result.update(status="planned", snapshots=[t["to_snap"] for t in transfers])
            result["snapshot"] = result["snapshots"][-1]
            return result
        where = f"image {plan['image']!r} -> backup image {dest!r}"
        started = time.monotonic()
        dest_spec = ImageSpec(self.settings.pool, self.settings.namespace, dest)
        lock, created = self._lock(dest, dest_spec)
        if isinstance(lock, LockBusy):
            result.update(status="locked", error=None, note=f"{where}: skipped, locked by {lock.holder}")
            return result
        notes: list[str] = []
        if lock.broke_stale:
            notes.append(f"{where}: broke a stale lock ({lock.broke_stale})")
        try:
            self._send(plan, transfers, dest_spec, lock, created, where, result, notes)
        finally:
            result["duration"] = round(time.monotonic() - started, 3)
            if notes:
                result["note"] = "; ".join(notes)
            release(self.backup, lock)
        return result

    def _create_placeholder(self, dest_spec: ImageSpec) -> bool:
        # The lock lives in the image header: a placeholder (resized by import-diff) comes first.
        try:
            self.backup.create(dest_spec, PLACEHOLDER_BYTES)
        except RbdError as exc:
            if not exc.is_exists:  # another run or backup node created it just now: fine
                raise
            return False
        return True

    def _lock(self, dest: str, dest_spec: ImageSpec) -> tuple[Lock | LockBusy, bool]:
        """The lock on the backup image (created first when missing), and whether this call created it."""
        s, listed = self.settings, self.listed
        created = False
        if listed is not None:
            # The run's listing says whether it exists: no `rbd info` per image to find out.
            if dest not in listed:
                created = self._create_placeholder(dest_spec)
        elif not self.backup.exists(dest_spec):
            created = self._create_placeholder(dest_spec)
        try:
            return try_acquire(self.backup, s.pool, s.namespace, dest, ttl=s.lock_ttl, now=parse_now(None)), created
        except RbdError as exc:
            if not (exc.is_not_found and listed is not None and dest in listed):
                raise
        # Removed since the listing (e.g. expired by a concurrent run): start it again.
        created = self._create_placeholder(dest_spec)
        return try_acquire(self.backup, s.pool, s.namespace, dest, ttl=s.lock_ttl, now=parse_now(None)), created

    def _send(
        self,
        plan: Mapping[str, Any],
        transfers: list[dict[str, Any]],
        dest_spec: ImageSpec,
        lock: Lock,
        created: bool,
        where: str,
        result: dict[str, Any],
        notes: list[str],
    ) -> None:
        """Under the lock: the snapshots still missing on the backup image, in order, up to the first failure."""
        dest = dest_spec.image
        listed_now = self.backup.snapshot_names(dest_spec)  # Ceph's creation order, kept as is
        present = set(listed_now)
        self.before[dest] = list(listed_now)
        self.after[dest] = list(listed_now)
        # Still the empty placeholder this call created (nobody wrote into it between its
        # creation and the lock: same size, no snapshot): a full needs no emptying first.
        fresh = created and not present and lock.size == PLACEHOLDER_BYTES
        todo = [t for t in transfers if t["to_snap"] not in present]
        if not todo:
            return  # another run delivered them while we waited
        base = todo[0]["from_snap"]
        if base is not None and base not in present:
            result.update(
                status="failed", ok=False, error=f"{where}: base snapshot {base!r} is missing on the backup cluster"
            )
            return
        if base is not None:
            # HEAD guard: the diff must land on the base's content, nothing else.
            reset = reset_written_head(self.backup, dest_spec, base, timeout=self.settings.stream.timeout)
            if reset:
                result["note"] = "; ".join(filter(None, [result.get("note"), reset]))
        result.update(kind="full" if base is None else "incremental", base=base)
        for step in todo:
            sent = self._send_one(plan, step, dest_spec, fresh, present, result["kind"])
            # The pipeline's remarks (HEAD emptied, a failed step's snapshot removed…).
            notes.extend(f"{where}: snapshot {step['to_snap']!r}: {note}" for note in sent.notes)
            result["bytes_logical"] += sent.bytes_logical
            result["bytes_wire"] += sent.bytes_wire
            if sent.engine == "librbd":
                result["engine"] = "librbd"
            if not sent.ok:
                if fresh and step["from_snap"] is None:
                    self.after.pop(dest, None)  # the failed full removed its placeholder
                result.update(
                    status="failed",
                    ok=False,
                    error=f"{where}: snapshot {step['to_snap']!r}: {sent.failed_stage} failed: {sent.error}",
                )
                return
            present.add(step["to_snap"])
            result["snapshots"].append(step["to_snap"])
            result["snapshot"] = step["to_snap"]
            self.after[dest] = [*self.after[dest], step["to_snap"]]  # the newest: appended
        result["status"] = "transferred"

    def _send_one(
        self,
        plan: Mapping[str, Any],
        step: Mapping[str, Any],
        dest_spec: ImageSpec,
        fresh: bool,
        present: set[str],
        kind: str,
    ) -> TransferResult:
        s = self.settings
        src_pool, src_ns = plan_source(plan, s.source_pool, s.source_namespace)
        image = plan["image"]
        tracker = None
        if self.board is not None:
            tracker = self.board.start(image, image, step["to_snap"], dest_spec.image, kind)
            src_spec = ImageSpec(src_pool, src_ns, image)
            tracker.estimate_in_background(
                lambda: estimate_transfer_bytes(self.live, src_spec, step["to_snap"], step["from_snap"]),
                delay=ESTIMATE_DELAY,
            )
        sent = transfer_snapshot(
            self.live,
            self.backup,
            src_pool,
            src_ns,
            image,
            step["to_snap"],
            step["from_snap"],
            s.pool,
            s.namespace,
            dest_spec.image,
            s.stream.compression,
            timeout=s.stream.timeout,
            progress=tracker.update if tracker is not None else None,
            fresh_destination=fresh and step["from_snap"] is None,
            stall_timeout=s.stream.stall_timeout,
            snap_prefix=s.snap_prefix,
            present=present,
            engine=self.engine,
            engine_fallback=s.stream_engine == "auto",
            throttle=self.throttles.for_stream(),
        )
        if self.board is not None:
            self.board.finish(image)
        return sent


DEFERRED = "deferred"


def _failed_by(plan: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    result = empty_result(plan)
    result.update(status="failed", ok=False, error=f"image {plan.get('image')!r}: {exc}")
    return result
