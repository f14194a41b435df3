# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The retention module's job: which snapshots (and, on the backup side, which images) of one
# pool expire under the policy (policy/retention.py decides per image), then their deletion by a
# pool of workers, an image that fails failing alone, and the report with its diff.
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.holds import holds_of
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import HOLD_KEY_PREFIX, Hold, apply_holds
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    backup_image_name_for_plain,
    parse_backup_image_name,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    Profile,
    backup_expiry,
    live_expiry,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard

Listing = dict[str, list[str]]


@dataclass(frozen=True)
class ExpiryPolicy:
    """What decides expiry on one side, validated (the module's options)."""

    side: str  # live | backup
    live_cluster: str
    prefix: str
    profiles: Mapping[str, Profile]
    now: datetime
    extra_retention_time: timedelta = timedelta(0)
    keep_min: int = 1
    shard_index: int = 0
    shard_count: int = 1


@dataclass(frozen=True)
class OtherSide:
    """What the run knows beyond this side's listing: the other side's, and the assumed snapshots."""

    snapshots: Mapping[str, list[str]]
    assumed: Mapping[str, list[str]] = field(default_factory=dict)
    assumed_other: Mapping[str, list[str]] = field(default_factory=dict)
    image_map: Mapping[str, str | None] | None = None


def given_listing(snapshots: Mapping[Any, Any] | None) -> Listing | None:
    """The listing a playbook passed (names as strings), or None when the pool must be listed."""
    if snapshots is None:
        return None
    return {str(image): [str(name) for name in snaps or []] for image, snaps in snapshots.items()}


def _plan(image: str, snaps: list[str], prefix: str, delete: list[str], remove: bool, kept: dict) -> dict | None:
    """The image's plan, or None when nothing is to be done.

    Defence in depth: whatever the policy says, only real snapshots of ours are deleted, and an
    image holding a snapshot not ours is never removed.
    """
    real = set(snaps)
    delete = [name for name in delete if name in real and name.startswith(prefix + ";")]
    if remove and any(not name.startswith(prefix + ";") for name in snaps):
        remove = False
    if not delete and not remove:
        return None
    return {"image": image, "deleted": delete, "removed": remove, "kept": kept, "error": None}


def live_expiry_plans(listing: Listing, other: OtherSide, policy: ExpiryPolicy) -> list[dict[str, Any]]:
    """Live side: the snapshots of this run's images that the backup no longer needs on live."""
    plans = []
    for image, snaps in sorted(listing.items()):
        try:
            if other.image_map is not None:
                if image not in other.image_map:
                    continue  # not one of the disks this run backs up
                backup_image = str(other.image_map[image])
            else:
                backup_image = backup_image_name_for_plain(policy.live_cluster, image)
        except NamingError:
            continue  # never backed up (the snapshot module reports why)
        if not in_shard(backup_image, policy.shard_index, policy.shard_count):
            continue
        own = [*snaps, *other.assumed.get(image, [])]
        other_names = [*other.snapshots.get(backup_image, []), *other.assumed_other.get(backup_image, [])]
        plan = _plan(
            image, snaps, policy.prefix, live_expiry(own, other_names, policy.profiles, policy.prefix), False, {}
        )
        if plan:
            plans.append(plan)
    return plans


def _backup_source(image: str, other: OtherSide, policy: ExpiryPolicy) -> tuple[bool, str | None]:
    """(ours to expire, key of its source on live) for one backup image."""
    parsed = parse_backup_image_name(image)
    if other.image_map is not None:
        # Proxmox: membership and source come from the map (IDENT is not the cluster).
        if parsed is None or image not in other.image_map:
            return False, None
        return True, other.image_map[image]
    if parsed is None or parsed.ident != policy.live_cluster:
        return False, None  # not a backup of this live cluster: not ours to expire
    return True, parsed.disk


def backup_expiry_plans(
    listing: Listing,
    other: OtherSide,
    policy: ExpiryPolicy,
    holds: Callable[[str], Mapping[str, Hold] | None] | None = None,
) -> list[dict[str, Any]]:
    """Backup side: the expired snapshots, and the images whose source is gone for good.

    The one place that decides backup-side expiry from the listing. ``holds(image)`` gives an
    image's holds (None: they could not be read, so nothing of it is deleted this time); it is
    asked only for an image the policy would change, and a held snapshot is kept, with its image.
    """
    plans = []
    for image, snaps in sorted(listing.items()):
        ours, source_key = _backup_source(image, other, policy)
        if not ours or not in_shard(image, policy.shard_index, policy.shard_count):
            continue  # not ours, or another backup node's share
        source_exists = source_key is not None and (source_key in other.snapshots or source_key in other.assumed_other)
        live_names = (
            [*other.snapshots.get(source_key, []), *other.assumed_other.get(source_key, [])] if source_key else []
        )
        expiry = backup_expiry(
            [*snaps, *other.assumed.get(image, [])],
            policy.profiles,
            policy.prefix,
            policy.now,
            source_exists=source_exists,
            live_snap_names=live_names,
            extra_retention_time=policy.extra_retention_time,
            keep_min=policy.keep_min,
        )
        if holds is not None and (expiry.delete or expiry.remove_image):
            expiry = apply_holds(expiry, holds(image), policy.now)
        plan = _plan(image, snaps, policy.prefix, expiry.delete, expiry.remove_image, expiry.kept_reasons)
        if plan:
            plans.append(plan)
    return plans


def expiry_diff(listing: Listing, plans: list[dict[str, Any]]) -> dict[str, Listing]:
    """Before and after of each planned image, in Ceph's creation order as listed."""
    return {
        "before": {plan["image"]: list(listing[plan["image"]]) for plan in plans},
        "after": {
            plan["image"]: []
            if plan["removed"]
            else [name for name in listing[plan["image"]] if name not in plan["deleted"]]
            for plan in plans
        },
    }


@dataclass(frozen=True)
class ExpiryRun:
    """How the job runs: where, how many at once, and what it may change."""

    pool: str
    namespace: str | None
    workers: int = 4
    fail_on_error: bool = True
    check_mode: bool = False
    diff_mode: bool = False


@dataclass
class ExpiryJob:
    """Expire one pool of one side; ``run()`` returns the module's result.

    ``given_listing`` is the pool as the run already knows it (then a snapshot already gone
    counts as deleted), or None to list it.
    """

    runner: RbdRunner
    given_listing: Listing | None
    other: OtherSide
    policy: ExpiryPolicy
    how: ExpiryRun

    @property
    def where(self) -> str:
        return f"{self.policy.side} pool {self.how.pool}" + (f"/{self.how.namespace}" if self.how.namespace else "")

    # The holds' image-meta by image when this job listed the backup pool itself (the listing
    # reads each header anyway); None: read an image's holds when the policy would change it.
    listed_meta: dict[str, dict[str, str]] | None = field(default=None, init=False)

    def listing(self) -> Listing:
        if self.given_listing is not None:
            return self.given_listing
        try:
            if self.policy.side == "backup":
                listing, self.listed_meta = self.runner.list_images_with_meta(
                    self.how.pool, self.how.namespace, HOLD_KEY_PREFIX
                )
                return listing
            return self.runner.list_images(self.how.pool, self.how.namespace)
        except RbdError as exc:
            raise ModuleFailure(f"retention on {self.where}: cannot list images: {exc}") from exc

    def holds(self, image: str) -> Mapping[str, Hold] | None:
        return holds_of(self.runner, ImageSpec(self.how.pool, self.how.namespace, image), self.listed_meta)

    def plans(self, listing: Listing) -> list[dict[str, Any]]:
        if self.policy.side == "backup":
            return backup_expiry_plans(listing, self.other, self.policy, self.holds)
        return live_expiry_plans(listing, self.other, self.policy)

    def expire(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Delete one image's expired snapshots (and the image); an error fails this image only."""
        done: list[str] = []
        try:
            for snap in plan["deleted"]:
                try:
                    self.runner.snap_remove(ImageSpec(self.how.pool, self.how.namespace, plan["image"], snap))
                except RbdError as exc:
                    # From a listing taken earlier in the run: already gone is what we wanted.
                    if not (self.given_listing is not None and exc.is_not_found):
                        raise
                done.append(snap)
            if plan["removed"]:
                self.runner.remove(ImageSpec(self.how.pool, self.how.namespace, plan["image"]))
        except RbdError as exc:
            plan.update(deleted=done, removed=False, error=f"image {plan['image']!r} on {self.where}: {exc}")
        return plan

    def _on_error(self, plan: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        plan.update(error=f"image {plan['image']!r} on {self.where}: {exc}")
        return plan

    def run(self) -> dict[str, Any]:
        listing = self.listing()
        plans = self.plans(listing)
        if not self.how.check_mode:
            run_batch(plans, self.expire, self.how.workers, on_error=self._on_error)
        result: dict[str, Any] = {
            "changed": any(plan["deleted"] or plan["removed"] for plan in plans),
            "images": plans,
            "failed_images": [{"image": plan["image"], "error": plan["error"]} for plan in plans if plan["error"]],
        }
        if self.how.diff_mode:
            result["diff"] = expiry_diff(listing, plans)
        if result["failed_images"] and self.how.fail_on_error:
            raise ModuleFailure("; ".join(item["error"] for item in result["failed_images"]), **result)
        return result
