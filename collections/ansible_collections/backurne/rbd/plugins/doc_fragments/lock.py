# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The per-image advisory lock on a backup image (module_utils/ceph/lock.py).
    DOCUMENTATION = r"""
options:
  lock_ttl:
    description:
      - Age (a duration such as C(6h), or seconds) after which another run's lock on a backup image
        counts as stale.
    type: str
    default: 6h
"""
