#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: check
short_description: Check that every image of a live cluster has a recent backup (Nagios style)
version_added: 0.1.0
description:
  - Runs on a backup node. Lists the live pool (over ssh) and the backup pool once each and
    reports, per live image, what leaves it unprotected - backurne's C(check), with the exit codes
    of a Nagios plugin in RV(status).
  - Critical C(no-backup) when an image has no backup image or none of our snapshots on it, unless
    the live image is younger than the shortest profile interval times O(grace_factor) (its first
    backup window has not passed). The creation time comes from C(rbd info) on the live node,
    asked only for the images without a backup; unknown or unparsable counts as old.
  - Critical C(no-shared-snapshot) when live and backup share no snapshot (the next backup would
    be a full one), critical C(too-old) when the newest backup snapshot of a profile is older than
    its interval times O(grace_factor), warning C(not-expired) when a backup snapshot is still
    present O(expiry_grace) past its expiry.
  - Read-only. Findings never fail the task (this is monitoring); an unreachable cluster gives
    RV(status) 3 (UNKNOWN). Only invalid options fail.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.pool_pair
  - backurne.rbd.policy
attributes:
  check_mode:
    support: full
    description: Read-only; checks in check mode too.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  live_cluster:
    description: Name of the live cluster (the IDENT of its backup images, C(NAME;IMAGE;None)).
    type: str
    required: true
  include:
    description: Shell patterns; when not empty, only live images matching one are checked.
    type: list
    elements: str
    default: []
  exclude:
    description: Shell patterns of live images not to check.
    type: list
    elements: str
    default: []
  grace_factor:
    description:
      - A profile's newest backup may be this many intervals old before it is critical (1.25 for
        C(daily) is 30 hours). Also the age below which a live image needs no backup yet.
    type: float
    default: 1.25
  expiry_grace:
    description: How long past its expiry a backup snapshot may remain before a warning.
    type: str
    default: 1d
  keep_min:
    description: The backup retention's C(keep_min); that many newest snapshots are never overdue.
    type: int
    default: 1
"""

EXAMPLES = r"""
- name: Check the backups of live cluster prod1
  backurne.rbd.check:
    pool: backups
    live_cluster: prod1
    live_host: 10.0.10.5
    live_ceph: {ceph_client: backurne}
    profiles: {daily: {count: 30}, weekly: {count: 4}}
  register: backurne_check

- name: Show the Nagios line
  ansible.builtin.debug:
    msg: "{{ backurne_check.line }}"
"""

RETURN = r"""
findings:
  description: One entry per problem, critical ones first within an image.
  returned: always
  type: list
  elements: dict
  contains:
    image:
      description: Live image name.
      type: str
    cluster:
      description: Live cluster name.
      type: str
    severity:
      description: C(critical) or C(warning).
      type: str
    code:
      description: C(no-backup), C(no-shared-snapshot), C(too-old) or C(not-expired).
      type: str
    message:
      description: What is wrong, for a human.
      type: str
  sample:
    - {image: db1, cluster: prod1, severity: critical, code: no-backup, message: no backup (created 3d ago)}
status:
  description: Nagios exit code, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a cluster could not be read).
  returned: always
  type: int
  sample: 2
line:
  description: The one-line Nagios status text.
  returned: always
  type: str
  sample: "BACKURNE CRITICAL - 1 critical, 0 warning of 14 images: prod1/db1 no backup (created 3d ago)"
summary:
  description: RV(line) without its C(BACKURNE STATE - ) head, to combine several clusters.
  returned: always
  type: str
  sample: "14 images checked"
checked:
  description: Number of live images checked.
  returned: always
  type: int
  sample: 14
"""

import fnmatch
from datetime import datetime, timedelta
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.args import (
    CEPH_ARGS,
    POLICY_ARGS,
    POOL_PAIR_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.monitor import (
    check_images,
    nagios_line,
    nagios_summary,
    parse_ctime,
    unknown_line,
)
from ansible_collections.backurne.rbd.plugins.module_utils.naming import NamingError, backup_image_name_for_plain
from ansible_collections.backurne.rbd.plugins.module_utils.policy import PolicyError, parse_duration, parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.rbd import ImageSpec, RbdError, RbdRunner


def selected(image: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(image, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(image, pattern) for pattern in exclude)


def live_utc_offset(live: RbdRunner) -> timedelta:
    """The live node's UTC offset: `rbd info` prints its local time. UTC when it cannot be read."""
    try:
        out = live.run_pipeline([["date", "+%z"]], timeout=30, action="date").strip()
    except RbdError:
        return timedelta(0)
    try:
        sign = -1 if out.startswith("-") else 1
        return sign * timedelta(hours=int(out[1:3]), minutes=int(out[3:5]))
    except (ValueError, IndexError):
        return timedelta(0)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **SSH_ARGS,
            **POLICY_ARGS,
            **POOL_PAIR_ARGS,
            "live_cluster": {"type": "str", "required": True},
            "include": {"type": "list", "elements": "str", "default": []},
            "exclude": {"type": "list", "elements": "str", "default": []},
            "grace_factor": {"type": "float", "default": 1.25},
            "expiry_grace": {"type": "str", "default": "1d"},
            "keep_min": {"type": "int", "default": 1},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        profiles = parse_profiles(p["profiles"])
        now = parse_now(p["now"])
        expiry_grace = parse_duration(p["expiry_grace"])
    except (PolicyError, ValueError) as exc:
        module.fail_json(msg=f"check: {exc}")
    if not p["grace_factor"] >= 1:
        module.fail_json(msg=f"check: grace_factor must be at least 1, got {p['grace_factor']}")
    if p["keep_min"] < 0:
        module.fail_json(msg=f"check: keep_min must be at least 0, got {p['keep_min']}")
    try:
        backup_image_name_for_plain(p["live_cluster"], "x")
    except NamingError as exc:
        module.fail_json(msg=f"check: live_cluster: {exc}")

    def unknown(error: str) -> None:
        status, line = unknown_line(f"{p['live_cluster']}: {error}")
        module.exit_json(
            changed=False, findings=[], status=status, line=line, summary=line.split(" - ", 1)[1], checked=0
        )

    backup = RbdRunner(ceph_access(p))
    live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    # One listing per side for the whole cluster.
    live_listing: dict[str, list[str]] = {}
    backup_listing: dict[str, list[str]] = {}
    try:
        live_listing = live.list_images(p["source_pool"], p["source_namespace"])
    except (RbdError, ValueError) as exc:
        unknown(f"cannot list the live images: {exc}")
    try:
        backup_listing = backup.list_images(p["pool"], p["namespace"])
    except (RbdError, ValueError) as exc:
        unknown(f"cannot list the backup images: {exc}")

    live_snapshots = {
        image: snaps for image, snaps in live_listing.items() if selected(image, p["include"], p["exclude"])
    }

    # `rbd info` only for the images with no backup: the young-image exemption needs their age.
    def has_backup(image: str) -> bool:
        try:
            name = backup_image_name_for_plain(p["live_cluster"], image)
        except NamingError:
            return True  # reported as not backupable; its age does not matter
        return any(snap.startswith(f"{p['snap_prefix']};") for snap in backup_listing.get(name, []))

    live_created: dict[str, datetime | None] = {}
    missing = [image for image in sorted(live_snapshots) if not has_backup(image)]
    offset = live_utc_offset(live) if missing else timedelta(0)
    for image in missing:
        try:
            info: Any = live.image_info(ImageSpec(p["source_pool"], p["source_namespace"], image))
        except RbdError as exc:
            if exc.rc == 255:  # ssh itself failed: the live node is gone, not the image
                unknown(f"cannot read the live images: {exc}")
            live_created[image] = None  # removed meanwhile, or unreadable: counts as old
            continue
        created = parse_ctime(info.get("create_timestamp") if isinstance(info, dict) else None)
        live_created[image] = None if created is None else created - offset

    try:
        findings = check_images(
            live_snapshots,
            live_created,
            backup_listing,
            p["live_cluster"],
            profiles,
            p["snap_prefix"],
            now,
            grace_factor=p["grace_factor"],
            expiry_grace=expiry_grace,
            keep_min=p["keep_min"],
        )
    except (PolicyError, NamingError) as exc:
        module.fail_json(msg=f"check: {exc}")
    status, line = nagios_line(findings, len(live_snapshots))
    module.exit_json(
        changed=False,
        findings=[finding.to_dict() for finding in findings],
        status=status,
        line=line,
        summary=nagios_summary(findings, len(live_snapshots)),
        checked=len(live_snapshots),
    )


if __name__ == "__main__":
    main()
