# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The checksum module's job: a batch of images compared live against backup (stream/checksum.py
# hashes one snapshot), the newest shared snapshot found from one listing per side, the backup
# snapshots found unequal set aside (self-healing), and the report the playbooks merge.
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_now
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.pool_pair import item_source
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, backup_image_name_for_plain
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import newest_shared
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import record_set_aside
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import (
    ChecksumResult,
    SetAside,
    compare_snapshot,
    set_aside_mismatches,
    set_aside_note,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir

NAME = "checksum"


def checksum_items(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The batch: the given items (each with its live pool) and the named plain images.

    Raises ModuleFailure naming the item at fault before anything is read.
    """
    if not params["hasher"]:
        raise ModuleFailure(f"{NAME}: hasher must name a command")
    if params["images"] and not params["live_cluster"]:
        raise ModuleFailure(f"{NAME}: 'images' needs 'live_cluster' to derive the backup image names")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(params["items"]):
        if not isinstance(item.get("image"), str) or not isinstance(item.get("backup_image"), str):
            raise ModuleFailure(f"{NAME}: items[{index}] needs 'image' and 'backup_image'")
        source_pool, source_ns = item_source(
            NAME, f"items[{index}]", item, params["source_pool"], params["source_namespace"]
        )
        # What the transfer sent this run (RV(backurne.rbd.transfer#module:images)): not
        # confirmed as long as its newest could not be compared.
        sent = [str(name) for name in item.get("snapshots") or []]
        items.append(_item(item["image"], item["backup_image"], item.get("snapshot"), source_pool, source_ns, sent))
    for image in params["images"]:
        try:
            backup_image = backup_image_name_for_plain(params["live_cluster"], image)
        except NamingError as exc:
            raise ModuleFailure(f"{NAME}: image {image!r}: {exc}") from exc
        items.append(_item(image, backup_image, None, params["source_pool"], params["source_namespace"], []))
    return _sampled(items, params["sample"])


def _item(
    image: str, backup_image: str, snapshot: str | None, source_pool: str, source_ns: str | None, sent: list[str]
) -> dict[str, Any]:
    return {
        "image": image,
        "backup_image": backup_image,
        "snapshot": snapshot,
        "source_pool": source_pool,
        "source_namespace": source_ns,
        "_sent": sent,
    }


def _sampled(items: list[dict[str, Any]], percent: int) -> list[dict[str, Any]]:
    if not 1 <= percent <= 100:
        raise ModuleFailure(f"{NAME}: sample must be a percentage from 1 to 100, got {percent}")
    if percent < 100 and items:
        # Reading every byte of every image twice is the cost of a verify run: spread it.
        return random.sample(items, max(1, len(items) * percent // 100))
    return items


def _result(item: Mapping[str, Any], **outcome: Any) -> dict[str, Any]:
    """One image's report, not compared yet (``outcome`` overrides)."""
    base = {"live": None, "backup": None, "match": False, "error": None, "set_aside": [], "confirmed_base": None}
    return {"skipped": None, **item, **base, "note": None, **outcome}


@dataclass(frozen=True)
class ChecksumOptions:
    pool: str
    namespace: str | None
    snap_prefix: str
    hasher: Sequence[str]
    set_aside: bool
    lock_ttl: timedelta
    workers: int
    fail_on_error: bool
    state_dir: str | None
    check_mode: bool

    @classmethod
    def of(cls, params: Mapping[str, Any], lock_ttl: timedelta, check_mode: bool) -> ChecksumOptions:
        """The module's options as they are (lock_ttl parsed by the caller)."""
        names = ("pool", "namespace", "snap_prefix", "hasher", "set_aside", "workers", "fail_on_error", "state_dir")
        return cls(lock_ttl=lock_ttl, check_mode=check_mode, **{name: params[name] for name in names})


@dataclass
class ChecksumJob:
    """Compare a batch of images on both sides; ``run()`` returns the module's result."""

    live: RbdRunner
    backup: RbdRunner
    items: list[dict[str, Any]]
    options: ChecksumOptions
    warn: Callable[[str], None]

    def run(self) -> dict[str, Any]:
        self._find_shared_snapshots()
        results = run_batch(
            self.items,
            self.check,
            self.options.workers,
            on_error=lambda item, exc: _result(item, error=f"image {item['image']!r}: {exc}", _confirmed=[]),
        )
        output = self._report(results)
        if output["mismatched"] and self.options.fail_on_error:
            failed = [r["error"] or r["image"] for r in results if r["image"] in output["mismatched"]]
            raise ModuleFailure("; ".join(failed), **output)
        return output

    def _find_shared_snapshots(self) -> None:
        """The newest shared snapshot of each item without one: one listing per side and live pool."""
        unknown = [item for item in self.items if item["snapshot"] is None]
        if not unknown:
            return
        sources = sorted({(item["source_pool"], item["source_namespace"] or "") for item in unknown})
        live_listings: dict[tuple[str, str], dict[str, list[str]]] = {}
        try:
            for source_pool, source_ns in sources:
                live_listings[(source_pool, source_ns)] = self.live.list_images(source_pool, source_ns or None)
            backup_listing = self.backup.list_images(self.options.pool, self.options.namespace)
        except RbdError as exc:
            raise ModuleFailure(f"{NAME}: cannot list images: {exc}") from exc
        for item in unknown:
            live_listing = live_listings[(item["source_pool"], item["source_namespace"] or "")]
            if item["image"] not in live_listing:
                item["skipped"] = f"image {item['image']!r} no longer exists on live: nothing to compare"
                continue
            live_names, backup_names = live_listing[item["image"]], backup_listing.get(item["backup_image"], [])
            shared = newest_shared(live_names, backup_names, self.options.snap_prefix)
            item["snapshot"] = shared.name if shared else None

    def _specs(self, item: Mapping[str, Any]) -> tuple[ImageSpec, ImageSpec]:
        live_spec = ImageSpec(item["source_pool"], item["source_namespace"], item["image"])
        return live_spec, ImageSpec(self.options.pool, self.options.namespace, item["backup_image"])

    def compare(self, item: Mapping[str, Any], snapshot: str) -> ChecksumResult:
        return compare_snapshot(self.live, self.backup, *self._specs(item), snapshot, hasher=self.options.hasher)

    def check(self, item: dict[str, Any]) -> dict[str, Any]:
        """One image: compare its snapshot, and set aside what differs."""
        result = _result(item)
        if item.get("skipped"):
            return result
        if item["snapshot"] is None:
            result["error"] = f"image {item['image']!r}: no snapshot shared by live and backup"
            return result
        compared = self.compare(item, item["snapshot"])
        result.update(live=compared.live, backup=compared.backup, match=compared.match, error=compared.error)
        if compared.match:
            return result
        # compare_snapshot's error does not say which image: the run's failure message must.
        result["error"] = (
            f"image {item['image']!r} (backup image {item['backup_image']!r}) snapshot {item['snapshot']!r}: "
            + (compared.error or f"checksums differ (live {compared.live}, backup {compared.backup})")
        )
        if compared.live is not None and compared.backup is not None:
            if self.options.set_aside:
                self._set_aside(item, result, compared)
        else:
            # Not compared: what this run sent (or the snapshot itself) is not confirmed.
            result["_confirmed"] = self._confirmed_listing(item, item["_sent"] or [item["snapshot"]])
        return result

    def _confirmed_listing(self, item: Mapping[str, Any], unconfirmed: list[str]) -> list[str]:
        # What live-side expiry may count as backed up; unreadable -> nothing (it then keeps all).
        try:
            names = self.backup.snapshot_names(self._specs(item)[1])
        except (RbdError, ValueError):
            return []
        return [name for name in names if name not in unconfirmed]

    def _set_aside(self, item: Mapping[str, Any], result: dict[str, Any], compared: ChecksumResult) -> None:
        outcome: SetAside = set_aside_mismatches(
            self.live,
            self.backup,
            *self._specs(item),
            item["snapshot"],
            self.options.snap_prefix + ";",
            lambda snapshot: self.compare(item, snapshot),
            self.options.lock_ttl,
            remove=not self.options.check_mode,
        )
        note = set_aside_note(item["backup_image"], compared, outcome)
        result.update(set_aside=outcome.removed, confirmed_base=outcome.confirmed, note=note)
        result["error"] += "; " + note
        if outcome.listing is not None:
            result["_listing"] = outcome.listing
            result["_confirmed"] = [name for name in outcome.listing if name not in outcome.unconfirmed()]
        else:
            result["_confirmed"] = []  # unknown: live-side expiry keeps everything of this image

    def _report(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """The module's result; the listings after the removals; the set-aside events recorded."""
        backup_snapshots: dict[str, list[str]] = {}
        confirmed_snapshots: dict[str, list[str]] = {}
        for result in results:
            result.pop("_sent", None)
            listing, confirmed = result.pop("_listing", None), result.pop("_confirmed", None)
            if listing is not None and result["set_aside"] and not self.options.check_mode:
                backup_snapshots[result["backup_image"]] = listing
            if confirmed is not None:
                confirmed_snapshots[result["backup_image"]] = confirmed
        differed = [r for r in results if r["live"] is not None and r["backup"] is not None and not r["match"]]
        if differed and not self.options.check_mode:
            # The check (same node) reports the event until a later successful transfer of the image.
            problem = record_set_aside(state_dir(self.options.state_dir), differed, parse_now(None))
            if problem:
                self.warn(problem)
        return {
            "changed": any(r["set_aside"] for r in results),
            "images": results,
            "mismatched": [r["image"] for r in results if not r["match"] and not r["skipped"]],
            "backup_snapshots": backup_snapshots,
            "confirmed_snapshots": confirmed_snapshots,
        }
