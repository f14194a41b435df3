# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The failure a job of the core reports on purpose, and the listing every batch starts with.
# Kept apart from the factory (which imports Ansible) so the core's jobs raise it without an
# Ansible import; the factory turns it into fail_json.
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner


class ModuleFailure(Exception):
    """A failure the core reports on purpose: fail_json with this message and these result keys."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


def pool_key(pool: str, namespace: str | None) -> str:
    """pool[/namespace], as messages and per-pool listings name a pool."""
    return pool + (f"/{namespace}" if namespace else "")


def list_pool(runner: RbdRunner, pool: str, namespace: str | None, owner: str) -> dict[str, list[str]]:
    """Every image of the pool with its snapshots (Ceph order), or the failure naming the pool.

    ``owner`` says whose pool it is in the message ("live cluster prod1", "backup").
    """
    try:
        return runner.list_images(pool, namespace)
    except RbdError as exc:
        raise ModuleFailure(f"{owner} pool {pool_key(pool, namespace)}: cannot list images: {exc}") from exc
