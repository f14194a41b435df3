# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The backup pool and the live pool, for the modules on a backup node that read both sides.
    DOCUMENTATION = r"""
options:
  pool:
    description: Backup pool.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside the backup pool.
    type: str
  source_pool:
    description: Pool of the images on the live cluster.
    type: str
    default: rbd
  source_namespace:
    description: RBD namespace of the images on the live cluster.
    type: str
"""
