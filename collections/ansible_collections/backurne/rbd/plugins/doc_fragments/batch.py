# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # A module task works through a whole batch of images with a bounded pool of workers; an image
    # that fails fails alone. A module with another default for workers documents it itself.
    DOCUMENTATION = r"""
options:
  workers:
    description: Images handled at once (at least 1).
    type: int
    default: 4
  fail_on_error:
    description: Fail the task when an image failed (the others are still handled, and reported).
    type: bool
    default: true
"""
