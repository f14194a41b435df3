# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The backup pool (and its namespace), written once: the pair's first half, and on its own
# (backurne.rbd.pool_pair.backup_pool) for the modules that read the backup pool alone.
_BACKUP_POOL_OPTIONS = r"""
  pool:
    description: Backup pool.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
"""


class ModuleDocFragment:
    # The backup pool and the live pool, for the modules on a backup node that read both sides.
    DOCUMENTATION = (
        "options:"
        + _BACKUP_POOL_OPTIONS
        + r"""  source_pool:
    description: Pool of the images on the live cluster.
    type: str
    default: rbd
  source_namespace:
    description: RBD namespace of the images on the live cluster.
    type: str
"""
    )

    BACKUP_POOL = "options:" + _BACKUP_POOL_OPTIONS
