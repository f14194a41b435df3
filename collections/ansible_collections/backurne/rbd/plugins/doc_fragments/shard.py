# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # Several backup nodes split one run's images (module_utils/policy/sharding.py).
    DOCUMENTATION = r"""
options:
  shard_index:
    description:
      - This backup node's share when O(shard_count) nodes split the batch. An image belongs to
        shard C(sha256(backup_image)[:8] mod shard_count) (see C(docs/performance.md)); the
        others are left out of the results (another node does them).
    type: int
    default: 0
  shard_count:
    description: Number of backup nodes splitting this batch (1 = this node does every image).
    type: int
    default: 1
"""
