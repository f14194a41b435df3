# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The snapshot step of a run on a live node: plan each image with its profiles, create the due
# snapshots in order, and report the plans in the shape the transfer and expiry steps read.
# Shared by the plain snapshot module (SnapshotJob) and the Proxmox one (proxmox/snapshot_job.py).
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access, live_cluster_owner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import (
    ModuleFailure,
    list_pool,
    pool_key,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    backup_image_name_for_plain,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import plan_priority, priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, Profile, plan_image


def matches(image: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def matches_any(pattern: str, images: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for image in images)


def selected(image: str, include: list[str], exclude: list[str], only: list[str]) -> bool:
    if include and not matches(image, include):
        return False
    if only and not matches(image, only):
        return False
    return not matches(image, exclude)


# The options that shape a snapshot run's plan, shared by snapshot and proxmox_snapshot
# (each documents them: their descriptions differ).
PLAN_ARGS: dict[str, dict[str, Any]] = {
    "backup_snapshots": {"type": "dict", "default": {}},
    "only_profiles": {"type": "list", "elements": "str"},
    "force": {"type": "bool", "default": False},
    "due_tolerance": {"type": "str", "default": "0"},
    "create": {"type": "bool", "default": True},
}


@dataclass(frozen=True)
class PlanSettings:
    """What decides which snapshots a run creates, the same for every image of the run."""

    prefix: str
    now: datetime
    tolerance: timedelta
    force: bool = False
    only_profiles: list[str] | None = None
    create: bool = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str, now: datetime, tolerance: timedelta) -> PlanSettings:
        """The settings of the PLAN_ARGS options, with the validated prefix, clock and tolerance."""
        return cls(prefix, now, tolerance, params["force"], params["only_profiles"], params["create"])

    def plan(
        self,
        image: str,
        backup_image: str,
        live_snaps: list[str],
        backup_snaps: list[str],
        profiles: Mapping[str, Profile],
        only: list[str] | None,
    ) -> dict[str, Any]:
        """One image's plan (raises NamingError/PolicyError), ok until its snapshots fail."""
        plan = plan_image(
            image,
            backup_image,
            live_snaps,
            backup_snaps,
            profiles,
            self.prefix,
            self.now,
            force=self.force,
            only=only,
            tolerance=self.tolerance,
        ).to_dict()
        if not self.create:
            # Cleanup-only: nothing is created, so only pending transfers would remain; none run.
            plan.update(due=[], new_snapshots=[], transfers=[], kind="none")
        plan.update(ok=True, error=None)
        return plan


def create_plan_snapshots(
    runner: RbdRunner,
    plan: dict[str, Any],
    spec: ImageSpec,
    listing: dict[str, list[str]],
    where: str,
    created: list[str] | None = None,
) -> bool:
    """Create the plan's snapshots in order, stopping at the first failure.

    Each snapshot made is appended to the image's listing (Ceph order) and to ``created``. On a
    failure the plan is failed with ``WHERE: snapshot NAME: ERROR`` and keeps only the transfers
    of snapshots that really exist.
    """
    for snap in plan["new_snapshots"]:
        try:
            runner.snap_create(ImageSpec(spec.pool, spec.namespace, spec.image, snap))
        except RbdError as exc:
            existing = set(listing[plan["image"]])
            plan.update(ok=False, error=f"{where}: snapshot {snap}: {exc}")
            plan["transfers"] = [t for t in plan["transfers"] if t["to_snap"] in existing]
            return False
        listing[plan["image"]] = [*listing[plan["image"]], snap]
        if created is not None:
            created.append(snap)
    return True


def planned_maps(plans: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per live image the snapshots created (or to create), per backup image those to transfer."""
    planned_live = {plan["image"]: plan["new_snapshots"] for plan in plans if plan.get("new_snapshots")}
    planned_backup = {
        plan["backup_image"]: [t["to_snap"] for t in plan["transfers"]] for plan in plans if plan.get("transfers")
    }
    return planned_live, planned_backup


def failed_images(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"image": plan["image"], "error": plan["error"]} for plan in plans if not plan["ok"]]


def snapshot_diff(before: Mapping[str, list[str]], new: Mapping[str, list[str]]) -> dict[str, Any]:
    """Each changed image's snapshot set before and after (the new snapshots appended)."""
    return {
        "before": dict(before),
        "after": {image: [*snaps, *new[image]] for image, snaps in before.items() if image in new},
    }


def fail_or_return(result: dict[str, Any], problems: list[str], fail_on_error: bool) -> dict[str, Any]:
    """The result, or, with fail_on_error and problems, the failure carrying it."""
    if problems and fail_on_error:
        raise ModuleFailure("; ".join(problems), **result)
    return result


# typing.Self is 3.11+; the nodes run 3.9 (a step's for_module builds the subclass it is called on).
_Step = TypeVar("_Step", bound="SnapshotStep")


@dataclass
class SnapshotStep:
    """What a snapshot step on a live node works with (plain images, or Proxmox VE guests' disks)."""

    p: Mapping[str, Any]
    runner: RbdRunner  # the live cluster's
    settings: PlanSettings
    profiles: Mapping[str, Profile]  # the default ones (a Proxmox guest may have its own)
    check_mode: bool
    diff_mode: bool
    warn: Callable[[str], None]

    @classmethod
    def for_module(cls: type[_Step], module: Any, **extra: Any) -> _Step:
        """The step of a module built by the factory (a BackurneModule, duck-typed: no Ansible
        import here): its parameters, validated shared options, due_tolerance and modes."""
        params, shared = module.params, module.shared
        runner = RbdRunner(ceph_access(params, owner=live_cluster_owner(params["live_cluster"])))
        tolerance = module.duration_or_zero("due_tolerance")
        settings = PlanSettings.from_params(params, str(shared.prefix), shared.now, tolerance)
        profiles = shared.profiles or {}
        return cls(
            params, runner, settings, profiles, module.check_mode, module.diff_mode, module.ansible.warn, **extra
        )


@dataclass
class SnapshotJob(SnapshotStep):
    """The snapshot step for one pool of plain RBD images (the module backurne.rbd.snapshot)."""

    owner: str = field(init=False)
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.owner = f"live cluster {self.p['live_cluster']}"
        self.where = f"{self.owner} pool {pool_key(self.p['pool'], self.p['namespace'])}"

    def plan_all(self, live: dict[str, list[str]]) -> list[dict[str, Any]]:
        plans: list[dict[str, Any]] = []
        for image in sorted(live):
            if not selected(image, self.p["include"], self.p["exclude"], self.p["only_images"]):
                continue
            try:
                backup_image = backup_image_name_for_plain(self.p["live_cluster"], image)
                plan = self.settings.plan(
                    image,
                    backup_image,
                    live[image],
                    self.p["backup_snapshots"].get(backup_image, []),
                    self.profiles,
                    self.settings.only_profiles,
                )
            except (NamingError, PolicyError) as exc:
                plans.append({"image": image, "ok": False, "error": f"image {image!r} in {self.where}: {exc}"})
                continue
            plan["priority"] = plan_priority(plan, self.profiles, self.settings.prefix)
            plans.append(plan)
        return plans

    def __call__(self) -> dict[str, Any]:
        p = self.p
        live = list_pool(self.runner, p["pool"], p["namespace"], self.owner)
        plans = self.plan_all(live)

        def create(plan: dict[str, Any]) -> dict[str, Any]:
            spec = ImageSpec(p["pool"], p["namespace"], plan["image"])
            create_plan_snapshots(self.runner, plan, spec, live, f"image {plan['image']!r} in {self.where}")
            return plan

        def on_error(plan: dict[str, Any], exc: BaseException) -> dict[str, Any]:
            plan.update(ok=False, error=f"image {plan['image']!r} in {self.where}: {exc}")
            return plan

        to_create = [plan for plan in plans if plan.get("new_snapshots")]
        before = {plan["image"]: list(live[plan["image"]]) for plan in to_create}  # Ceph order
        if not self.check_mode:
            run_batch(priority_order(to_create), create, int(p["workers"]), on_error=on_error)
        planned_live, planned_backup = planned_maps(plans)
        result: dict[str, Any] = {
            "changed": bool(to_create),
            "images": plans,
            "live_snapshots": live,
            "planned_live": planned_live,
            "planned_backup": planned_backup,
        }
        if self.diff_mode:
            result["diff"] = snapshot_diff(before, planned_live)
        result["unmatched_limits"] = [pattern for pattern in p["only_images"] if not matches_any(pattern, live)]
        if result["unmatched_limits"]:
            # An operator's typo must not pass for "nothing due" (the playbook fails a dry run on it).
            self.warn(
                f"{self.where}: backurne_limit_images pattern(s) {', '.join(map(repr, result['unmatched_limits']))} "
                "match no image"
            )
        result["failed_images"] = failed_images(plans)
        return fail_or_return(result, [item["error"] for item in result["failed_images"]], p["fail_on_error"])
