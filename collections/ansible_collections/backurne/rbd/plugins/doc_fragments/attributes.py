# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The attribute every module of the collection shares: membership of the action group that
    # module_defaults use (meta/runtime.yml). check_mode and diff_mode are each module's own.
    DOCUMENTATION = r"""
attributes:
  action_group:
    description: Use C(group/backurne.rbd.all) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - backurne.rbd.all
"""

    # backurne.rbd.attributes.read_only: check_mode and diff_mode of a module that only reads
    # (a module's own attributes entry overrides a field, e.g. another description).
    READ_ONLY = r"""
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
"""
