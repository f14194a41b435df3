#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Create the due backup snapshots for a batch of images on a live cluster
version_added: 0.1.0
description:
  - Runs on a live node. Lists the pool once, decides per image which retention profiles are due
    (from the backup snapshots given in O(backup_snapshots)), creates one snapshot per due profile,
    and returns per image the plan of the run (full or incremental, base, transfers).
  - One invocation serves a whole pool; snapshots are created by a bounded pool of workers.
  - Snapshot names are C(PREFIX;PROFILE;COUNT;ISOTIME), identical to backurne 2.x.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.policy
attributes:
  check_mode:
    support: full
    description: Returns the plan, with the snapshot names it would create, and creates nothing.
  diff_mode:
    support: full
    description: Shows each changed image's snapshot set before and after.
options:
  live_cluster:
    description:
      - Name of the live cluster; the first field of the backup image names (C(NAME;IMAGE;None)).
    type: str
    required: true
  pool:
    description: Pool of the images.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
  include:
    description: Shell patterns; only images matching one of them are backed up. All when empty.
    type: list
    elements: str
    default: []
  exclude:
    description: Shell patterns of images never backed up.
    type: list
    elements: str
    default: []
  only_images:
    description:
      - Shell patterns narrowing this run to matching images (the operator's "limit"), on top of
        O(include) and O(exclude). All selected images when empty.
    type: list
    elements: str
    default: []
  backup_snapshots:
    description:
      - Snapshot names per backup image, as returned by M(backurne.rbd.info) in RV(backurne.rbd.info#module:snapshots).
    type: dict
    default: {}
  only_profiles:
    description: Only these profiles may become due in this run.
    type: list
    elements: str
  due_tolerance:
    description:
      - How much earlier than its interval a profile becomes due (a duration such as C(5m), or
        seconds; at most half the interval). Keeps a run scheduled every hour from skipping an
        hour when it starts a few seconds earlier than the previous one.
    type: str
    default: "0"
  force:
    description: Treat every (selected) profile as due.
    type: bool
    default: false
  create:
    description:
      - Create the due snapshots. V(false) only reports the state and the plan (cleanup-only runs).
    type: bool
    default: true
  workers:
    description: Images handled at once.
    type: int
    default: 4
  fail_on_error:
    description:
      - Fail the task when an image failed. With V(false) the task succeeds, the other images are
        still handled, and RV(failed_images) names the failures (the backup playbook reports them
        at the end of the cluster).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Snapshot the images whose profiles are due
  backurne.rbd.snapshot:
    live_cluster: prod1
    pool: rbd
    ceph_client: backurne
    profiles: {daily: {count: 30}, weekly: {count: 8}}
    backup_snapshots: "{{ backup_listing.snapshots }}"
  delegate_to: ceph-prod1-client
  register: snap
"""

RETURN = r"""
images:
  description: The plan and outcome per selected image, in name order.
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
    due:
      description: Profiles due in this run.
      type: list
      elements: str
    new_snapshots:
      description: Snapshots created (or, in check mode, that would be created), in creation order.
      type: list
      elements: str
    base:
      description: Newest snapshot shared by live and backup, or null (full backup).
      type: str
    kind:
      description: C(full), C(incremental) or C(none) (nothing to transfer).
      type: str
    transfers:
      description: Transfers the backup node has to run, in order (C(from_snap) null means full).
      type: list
      elements: dict
    priority:
      description:
        - C(high) when a due profile, or the profile of a snapshot to transfer, has C(priority=high);
          else C(normal). Such images get their snapshots first, and the transfer module starts them first.
      type: str
    ok:
      description: Whether the image's snapshots were created.
      type: bool
    error:
      description: Why the image failed, naming the image and the cause.
      type: str
  sample:
    - image: web1
      backup_image: "prod1;web1;None"
      due: [daily]
      new_snapshots: ["backup;daily;30;2026-11-29T10:00:00.000000"]
      base: "backup;daily;30;2026-11-28T10:00:00.000000"
      kind: incremental
      transfers: [{from_snap: "backup;daily;30;2026-11-28T10:00:00.000000", to_snap: "backup;daily;30;2026-11-29T10:00:00.000000"}]
      ok: true
      error: null
live_snapshots:
  description:
    - Every snapshot name per image of the pool after this run (all images, selected or not), each
      list in Ceph's creation order (oldest first; this run's snapshots appended).
  returned: success
  type: dict
planned_live:
  description: Per live image, the snapshots this run creates (or would create in check mode).
  returned: success
  type: dict
planned_backup:
  description: Per backup image, the snapshots this run is to transfer.
  returned: success
  type: dict
unmatched_limits:
  description: The patterns of O(only_images) that match no image of the pool (with a warning).
  returned: success
  type: list
  elements: str
failed_images:
  description: Images that failed, with the reason; the other images were still handled.
  returned: always
  type: list
  elements: dict
  sample: [{image: "db1", error: "image 'db1' in live cluster prod1 pool rbd: snapshot ...: permission denied"}]
"""

import fnmatch
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    POLICY_ARGS,
    ceph_access,
    live_cluster_owner,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    backup_image_name_for_plain,
    validate_prefix,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import plan_priority, priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    parse_profiles,
    plan_image,
)


def matches(image: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def matches_any(pattern: str, images: Any) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for image in images)


def selected(image: str, include: list[str], exclude: list[str], only: list[str]) -> bool:
    if include and not matches(image, include):
        return False
    if only and not matches(image, only):
        return False
    return not matches(image, exclude)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **POLICY_ARGS,
            "live_cluster": {"type": "str", "required": True},
            "pool": {"type": "str", "default": "rbd"},
            "namespace": {"type": "str"},
            "include": {"type": "list", "elements": "str", "default": []},
            "exclude": {"type": "list", "elements": "str", "default": []},
            "only_images": {"type": "list", "elements": "str", "default": []},
            "backup_snapshots": {"type": "dict", "default": {}},
            "only_profiles": {"type": "list", "elements": "str"},
            "force": {"type": "bool", "default": False},
            "due_tolerance": {"type": "str", "default": "0"},
            "create": {"type": "bool", "default": True},
            "workers": {"type": "int", "default": 4},
            "fail_on_error": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        prefix = validate_prefix(p["snap_prefix"])
        profiles = parse_profiles(p["profiles"])
        now = parse_now(p["now"])
        tolerance = parse_duration_or_zero(p["due_tolerance"])
    except (NamingError, PolicyError, ValueError) as exc:
        module.fail_json(msg=f"snapshot: bad input: {exc}")
    if p["workers"] < 1:
        module.fail_json(msg=f"snapshot: workers must be at least 1, got {p['workers']}")

    runner = RbdRunner(ceph_access(p, owner=live_cluster_owner(p["live_cluster"])))
    where = f"live cluster {p['live_cluster']} pool {p['pool']}" + (f"/{p['namespace']}" if p["namespace"] else "")
    try:
        live = runner.list_images(p["pool"], p["namespace"])
    except RbdError as exc:
        module.fail_json(msg=f"{where}: cannot list images: {exc}")

    plans: list[dict[str, Any]] = []
    for image in sorted(live):
        if not selected(image, p["include"], p["exclude"], p["only_images"]):
            continue
        try:
            backup_image = backup_image_name_for_plain(p["live_cluster"], image)
            plan = plan_image(
                image,
                backup_image,
                live[image],
                p["backup_snapshots"].get(backup_image, []),
                profiles,
                prefix,
                now,
                force=p["force"],
                only=p["only_profiles"],
                tolerance=tolerance,
            ).to_dict()
        except (NamingError, PolicyError) as exc:
            plans.append({"image": image, "ok": False, "error": f"image {image!r} in {where}: {exc}"})
            continue
        if not p["create"]:
            # Cleanup-only: nothing is created, so only pending transfers would remain; none run.
            plan.update(due=[], new_snapshots=[], transfers=[], kind="none")
        plan.update(ok=True, error=None, priority=plan_priority(plan, profiles, prefix))
        plans.append(plan)

    def create_snapshots(plan: dict[str, Any]) -> dict[str, Any]:
        for snap in plan["new_snapshots"]:
            try:
                runner.snap_create(ImageSpec(p["pool"], p["namespace"], plan["image"], snap))
            except RbdError as exc:
                created = live[plan["image"]]
                plan.update(ok=False, error=f"image {plan['image']!r} in {where}: snapshot {snap}: {exc}")
                # Transfers may only target snapshots that really exist.
                plan["transfers"] = [t for t in plan["transfers"] if t["to_snap"] in created]
                return plan
            live[plan["image"]] = [*live[plan["image"]], snap]
        return plan

    def on_error(plan: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        plan.update(ok=False, error=f"image {plan['image']!r} in {where}: {exc}")
        return plan

    to_create = [plan for plan in plans if plan.get("new_snapshots")]
    before = {plan["image"]: list(live[plan["image"]]) for plan in to_create}  # Ceph order
    if not module.check_mode:
        run_batch(priority_order(to_create), create_snapshots, p["workers"], on_error=on_error)

    changed = bool(to_create)
    planned_live = {plan["image"]: plan["new_snapshots"] for plan in to_create}
    planned_backup = {
        plan["backup_image"]: [t["to_snap"] for t in plan["transfers"]] for plan in plans if plan.get("transfers")
    }
    result: dict[str, Any] = {
        "changed": changed,
        "images": plans,
        "live_snapshots": live,
        "planned_live": planned_live,
        "planned_backup": planned_backup,
    }
    if module._diff:
        result["diff"] = {
            "before": before,
            "after": {image: [*snaps, *planned_live[image]] for image, snaps in before.items()},
        }
    result["unmatched_limits"] = [pattern for pattern in p["only_images"] if not matches_any(pattern, live)]
    if result["unmatched_limits"]:
        # An operator's typo must not pass for "nothing due" (the playbook fails a dry run on it).
        module.warn(
            f"{where}: backurne_limit_images pattern(s) {', '.join(map(repr, result['unmatched_limits']))} "
            "match no image"
        )
    result["failed_images"] = [{"image": plan["image"], "error": plan["error"]} for plan in plans if not plan["ok"]]
    if result["failed_images"] and p["fail_on_error"]:
        module.fail_json(msg="; ".join(item["error"] for item in result["failed_images"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
