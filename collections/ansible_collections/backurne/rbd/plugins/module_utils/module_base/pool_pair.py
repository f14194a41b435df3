# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# What every backup-node module that reads both clusters (transfer, checksum, check, restore)
# builds from its options the same way: the two runners, the lock age, an item's live pool.
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access, live_ssh_target
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, parse_duration


def backup_and_live_runners(params: dict[str, Any]) -> tuple[RbdRunner, RbdRunner]:
    """The backup cluster's runner (this node) and the live cluster's (over ssh to live_host)."""
    backup = RbdRunner(ceph_access(params))
    live = RbdRunner(ceph_access(params["live_ceph"] or {}), ssh=live_ssh_target(params))
    return backup, live


def lock_ttl_option(module_name: str, value: str) -> timedelta:
    """The lock_ttl option as a duration; a bad one fails the module naming the option."""
    try:
        return parse_duration(value)
    except PolicyError as exc:
        raise ModuleFailure(f"{module_name}: lock_ttl: {exc}") from exc


def item_source(
    module_name: str, where: str, item: Mapping[str, Any], source_pool: str, source_namespace: str | None
) -> tuple[str, str | None]:
    """The live pool and namespace of one batch item, checked to be names rbd can address.

    An item's own source (Proxmox disks live in several pools) wins over the options; its
    namespace goes with its pool. ``where`` names the item in messages (``items[3]``).
    """
    pool, namespace = source_pool, source_namespace
    if item.get("source_pool") is not None:
        pool, namespace = item["source_pool"], item.get("source_namespace")
    if not isinstance(pool, str) or not isinstance(namespace, (str, type(None))):
        raise ModuleFailure(
            f"{module_name}: {where} ({item['image']!r}): source_pool must be a string "
            "and source_namespace a string or null"
        )
    try:
        ImageSpec(pool, namespace or None, item["image"])  # names rbd can address, before any call
    except ValueError as exc:
        raise ModuleFailure(f"{module_name}: {where} ({item['image']!r}): {exc}") from exc
    return pool, namespace or None
