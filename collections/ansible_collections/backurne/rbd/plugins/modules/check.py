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
    asked only for the images without a backup; when unknown, the first time the check saw the
    image (history database) is used; unknown in both counts as old.
  - Critical C(transfer-failed) when the latest transfer of an image failed, as recorded by
    M(backurne.rbd.transfer) in the history database C(history.sqlite) of O(state_dir) on this
    node (the backup and check playbooks both run on the first backup node).
  - Critical C(may-be-frozen) when the last fsfreeze of a Proxmox guest was not confirmed undone
    (M(backurne.rbd.proxmox_snapshot)'s C(may_be_frozen), recorded in the same history database by
    M(backurne.rbd.transfer)); it stays until a later freeze of that guest is confirmed thawed.
  - Critical C(checksum-mismatch) when a backup snapshot of the image was found unequal to live
    and set aside by M(backurne.rbd.checksum) (history database), until a later successful
    transfer of the image (the next backup run re-sends it).
  - Critical C(faded-out) for a backup image whose live image is gone and that is still there
    O(expiry_grace) past its removal time (newest snapshot's expiry plus
    O(extra_retention_time)), or that holds none of our snapshots.
  - Critical C(no-shared-snapshot) when live and backup share no snapshot (the next backup would
    be a full one), critical C(too-old) when the newest backup snapshot of a profile is older than
    its interval times O(grace_factor), warning C(not-expired) when a backup snapshot is still
    present O(expiry_grace) past its expiry (not for a held snapshot, see C(playbooks/hold.yml);
    retention keeps it on purpose).
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
  extra_retention_time:
    description:
      - The backup retention's C(extra_retention_time) (a duration such as C(7d), or seconds),
        how long a backup image whose source is gone is kept past its newest snapshot's expiry.
    type: str
    default: "0"
  expected:
    description:
      - The live images to check, with their backup image names, instead of listing O(source_pool)
        and naming backups C(CLUSTER;IMAGE;None). For Proxmox guests, the C(disks) of
        M(backurne.rbd.proxmox_discover) fit as they are.
      - Keys used per item are C(image) and C(backup_image) (required), C(pool) and C(namespace)
        (the live pool, default O(source_pool) and O(source_namespace)), C(live_cluster),
        C(endpoint), and C(profiles) (the image's own profiles, instead of O(profiles)); other
        keys are ignored.
      - Items of another live cluster (C(live_cluster)) or, when O(endpoint) is set, of another
        endpoint are not checked here, but still count as expected.
      - Backup images seen earlier for this cluster (history) and no longer expected are checked
        as faded out.
    type: list
    elements: dict
  endpoint:
    description: With O(expected), check only the items whose C(endpoint) is this (the live node reached).
    type: str
  history:
    description:
      - Keep the first time each live image was seen, and read the transfer results, in
        C(history.sqlite) in O(state_dir). In check mode the history is read, not written.
    type: bool
    default: true
  state_dir:
    description: Directory of backurne's state on this node. Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
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
      description: >-
        C(no-backup), C(no-shared-snapshot), C(too-old), C(not-expired), C(transfer-failed),
        C(may-be-frozen), C(checksum-mismatch) or C(faded-out) (then RV(findings[].image) is the backup image name).
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
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    POLICY_ARGS,
    POOL_PAIR_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    HOLD_KEY_PREFIX,
    held_now,
    holds_from_metadata,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NO_COMMENT,
    NamingError,
    backup_image_name_for_plain,
    parse_backup_image_name,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    parse_duration,
    parse_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.health import (
    check_faded,
    check_images,
    nagios_line,
    nagios_summary,
    parse_ctime,
    unknown_line,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import FreezeState, History, TransferState
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir


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
            "extra_retention_time": {"type": "str", "default": "0"},
            "expected": {"type": "list", "elements": "dict"},
            "endpoint": {"type": "str"},
            "history": {"type": "bool", "default": True},
            "state_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        profiles = parse_profiles(p["profiles"])
        now = parse_now(p["now"])
        expiry_grace = parse_duration(p["expiry_grace"])
        extra_retention = parse_duration_or_zero(p["extra_retention_time"])
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

    # The expected images (Proxmox guests): live image -> (pool, namespace, backup image).
    expected: dict[str, tuple[str, str | None, str]] | None = None
    elsewhere: set[str] = set()  # backup images expected on another cluster or endpoint
    own_profiles: dict[str, dict[str, Any]] = {}  # image -> its profiles (a Proxmox guest's tags)
    if p["expected"] is not None:
        expected = {}
        for index, item in enumerate(p["expected"]):
            image, name = item.get("image"), item.get("backup_image")
            if not isinstance(image, str) or not isinstance(name, str) or parse_backup_image_name(name) is None:
                module.fail_json(
                    msg=f"check: expected[{index}]: needs an image and a backup_image IDENT;DISK;COMMENT, got {item!r}"
                )
            if item.get("live_cluster") not in (None, p["live_cluster"]) or (
                p["endpoint"] is not None and item.get("endpoint") != p["endpoint"]
            ):
                elsewhere.add(name)
                continue
            pool = item.get("pool") or p["source_pool"]
            namespace = item.get("namespace") if item.get("pool") else (item.get("namespace") or p["source_namespace"])
            try:
                ImageSpec(pool, namespace, image)
            except ValueError as exc:
                module.fail_json(msg=f"check: expected[{index}]: {exc}")
            if expected.get(image, (pool, namespace, name)) != (pool, namespace, name):
                module.fail_json(msg=f"check: expected: image {image!r} is listed twice, differently")
            expected[image] = (pool, namespace, name)
            if item.get("profiles"):
                try:
                    own_profiles[image] = parse_profiles(item["profiles"])
                except (PolicyError, TypeError, AttributeError) as exc:
                    module.fail_json(msg=f"check: expected[{index}] ({image}): profiles: {exc}")

    def unknown(error: str) -> None:
        status, line = unknown_line(f"{p['live_cluster']}: {error}")
        module.exit_json(
            changed=False, findings=[], status=status, line=line, summary=line.split(" - ", 1)[1], checked=0
        )

    backup = RbdRunner(ceph_access(p))
    live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    # One listing per live pool and one of the backup pool for the whole cluster.
    pools = (
        sorted({(pool, namespace or "") for pool, namespace, _backup in expected.values()})
        if expected is not None
        else [(p["source_pool"], p["source_namespace"] or "")]
    )
    live_listings: dict[tuple[str, str], dict[str, list[str]]] = {}
    backup_listing: dict[str, list[str]] = {}
    for pool, namespace in pools:
        try:
            live_listings[(pool, namespace)] = live.list_images(pool, namespace or None)
        except (RbdError, ValueError) as exc:
            unknown(f"cannot list the live images: {exc}")
    held: dict[str, set[str]] = {}  # held snapshots are kept on purpose: never "not expired in time"
    try:
        backup_listing, metas = backup.list_images_with_meta(p["pool"], p["namespace"], HOLD_KEY_PREFIX)
        held = {image: held_now(holds_from_metadata(meta), now) for image, meta in metas.items()}
    except (RbdError, ValueError) as exc:
        unknown(f"cannot list the backup images: {exc}")

    if expected is not None:
        where = {image: (pool, namespace) for image, (pool, namespace, _backup) in expected.items()}
        backup_names: dict[str, str] | None = {image: names[2] for image, names in expected.items()}
        live_snapshots = {
            image: live_listings[(pool, namespace or "")].get(image, [])
            for image, (pool, namespace, _backup) in expected.items()
            if selected(image, p["include"], p["exclude"])
        }
    else:
        listing = live_listings[pools[0]]
        where = {image: (p["source_pool"], p["source_namespace"]) for image in listing}
        backup_names = None
        live_snapshots = {
            image: snaps for image, snaps in listing.items() if selected(image, p["include"], p["exclude"])
        }

    def backup_name(image: str) -> str | None:
        if backup_names is not None:
            return backup_names[image]
        try:
            return backup_image_name_for_plain(p["live_cluster"], image)
        except NamingError:
            return None

    # History: first sight of each image, last transfer outcomes (written by the transfer module).
    first_seen: dict[str, datetime] = {}
    transfers: dict[str, TransferState] = {}
    freezes: dict[str, FreezeState] = {}
    known_backups: dict[str, str] = {}
    if p["history"]:
        try:
            with History(state_dir(p["state_dir"])) as history:
                first_seen = history.record_seen(
                    p["live_cluster"],
                    {image: backup_name(image) for image in live_snapshots},
                    now,
                    write=not module.check_mode,
                )
                transfers = history.transfer_states(filter(None, map(backup_name, live_snapshots)))
                freezes = history.freeze_states(filter(None, map(backup_name, live_snapshots)))
                known_backups = history.known_backup_images(p["live_cluster"])
        except (OSError, sqlite3.Error) as exc:
            module.warn(f"check: history database unusable, checking without it: {exc}")

    # `rbd info` only for the images with no backup: the young-image exemption needs their age.
    def has_backup(image: str) -> bool:
        name = backup_name(image)
        if name is None:
            return True  # reported as not backupable; its age does not matter
        return any(snap.startswith(f"{p['snap_prefix']};") for snap in backup_listing.get(name, []))

    live_created: dict[str, datetime | None] = {}
    missing = [image for image in sorted(live_snapshots) if not has_backup(image)]
    offset = live_utc_offset(live) if missing else timedelta(0)
    for image in missing:
        pool, namespace = where[image]
        try:
            info: Any = live.image_info(ImageSpec(pool, namespace, image))
        except RbdError as exc:
            if exc.rc == 255:  # ssh itself failed: the live node is gone, not the image
                unknown(f"cannot read the live images: {exc}")
            live_created[image] = None  # removed meanwhile, or unreadable: counts as old
            continue
        created = parse_ctime(info.get("create_timestamp") if isinstance(info, dict) else None)
        live_created[image] = None if created is None else created - offset

    # Backup images of this cluster whose live image is gone.
    if expected is None:
        present = live_listings[pools[0]]
        gone = {
            name: snaps
            for name, snaps in backup_listing.items()
            if (parsed := parse_backup_image_name(name)) is not None
            and parsed.ident == p["live_cluster"]
            and parsed.comment == NO_COMMENT
            and parsed.disk not in present
        }
    else:
        still = {names[2] for names in expected.values()} | elsewhere
        gone = {name: backup_listing[name] for name in known_backups if name not in still and name in backup_listing}

    # Images with their own profiles are checked against those, in groups of equal profiles.
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for image in live_snapshots:
        own = own_profiles.get(image, profiles)
        groups.setdefault(repr(sorted(own.items())), (own, []))[1].append(image)
    every_profile = dict(profiles)
    for own in own_profiles.values():
        every_profile.update(own)
    findings = []
    try:
        for group_profiles, group in groups.values():
            findings += check_images(
                {image: live_snapshots[image] for image in group},
                live_created,
                backup_listing,
                p["live_cluster"],
                group_profiles,
                p["snap_prefix"],
                now,
                grace_factor=p["grace_factor"],
                expiry_grace=expiry_grace,
                keep_min=p["keep_min"],
                backup_names=backup_names,
                first_seen=first_seen,
                transfers=transfers,
                freezes=freezes,
                held=held,
            )
        findings.sort(key=lambda finding: finding.image)  # stable: each image's own order stays
        findings += check_faded(
            gone, p["live_cluster"], every_profile, p["snap_prefix"], now, extra_retention, expiry_grace
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
