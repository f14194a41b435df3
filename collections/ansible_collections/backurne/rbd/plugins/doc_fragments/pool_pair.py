# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The pool pair of a module on a backup node that reads both sides: the backup pool
    # (backurne.rbd.pool_pair.backup_pool, which the modules reading the backup pool alone use
    # too) and the live pool (this default fragment). A module of the factory's pool_pair group
    # lists both. Each is one plain literal: ansible-test's yamllint reads these strings as they
    # are written, not as Python would build them.
    DOCUMENTATION = r"""
options:
  source_pool:
    description: Pool of the images on the live cluster.
    type: str
    default: rbd
  source_namespace:
    description: RBD namespace of the images on the live cluster.
    type: str
"""

    BACKUP_POOL = r"""
options:
  pool:
    description: Backup pool.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
"""
