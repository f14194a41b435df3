#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: legacy_lock
short_description: Refuse to run while backurne 2.x holds a lock on this node
version_added: 0.1.0
description:
  - For a cut-over from backurne 2.x. 2.x locks each image with a file lock in its C(lockdir);
    backurne 3 locks images in Ceph, so the two share no lock and running both at once fails
    one of them. This module fails, naming the lock files and the processes holding them, while
    a 2.x process holds any lock in O(lockdir).
  - Reads the kernel's list of held locks (C(/proc/locks)) and matches it with the files of
    O(lockdir) by device and inode; it opens and locks nothing, so a running 2.x is never
    disturbed. A missing O(lockdir) holds no lock. Linux only.
  - Not a member of the action group C(backurne.rbd.all) (it talks to no Ceph cluster).
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.attributes.read_only
options:
  lockdir:
    description: backurne 2.x's C(lockdir) setting.
    type: path
    default: /var/lock/backurne
"""

EXAMPLES = r"""
- name: Refuse to run while backurne 2.x holds a lock
  backurne.rbd.legacy_lock:
    lockdir: /var/lock/backurne
"""

RETURN = r"""
held:
  description: The lock files held (empty when the module succeeds), with the holder's pid.
  returned: always
  type: list
  elements: dict
  sample: [{path: "/var/lock/backurne/rbdprod;web1;None", pid: 4242}]
"""

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.legacy_lock import describe, held_locks


def main() -> None:
    module = create_module("legacy_lock", {"lockdir": {"type": "path", "default": "/var/lock/backurne"}}, groups=())

    def job() -> dict:
        try:
            locks = held_locks(module.params["lockdir"])
        except OSError as exc:
            raise ModuleFailure(f"legacy_lock: cannot read the locks of {module.params['lockdir']}: {exc}") from exc
        held = [{"path": lock.path, "pid": lock.pid} for lock in locks]
        if locks:
            raise ModuleFailure(f"legacy_lock: {describe(locks)}", held=held)
        return {"changed": False, "held": held}

    module.run(job)


if __name__ == "__main__":
    main()
