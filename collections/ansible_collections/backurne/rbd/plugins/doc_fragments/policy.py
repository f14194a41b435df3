# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # Options every module needs to recognise and name backurne's snapshots and backup images.
    DOCUMENTATION = r"""
options:
  snap_prefix:
    description:
      - First field of every backup snapshot name (C(PREFIX;PROFILE;COUNT;ISOTIME)).
      - Only snapshots starting with C(PREFIX;) are ever created, sent or deleted.
      - May contain neither C(;) nor a quote.
    type: str
    default: backup
  profiles:
    description:
      - Retention profiles, by name. Keys per profile are C(count) (required, at least 1),
        C(interval) (required unless the name is C(hourly), C(daily), C(weekly) or C(monthly);
        a duration such as C(6h), C(1d12h) or a number of seconds), C(max_on_live)
        (default 0) and C(priority) (C(high) or C(normal)).
    type: dict
    default: {daily: {count: 30}}
  now:
    description:
      - The current time as ISO 8601 (naive, UTC), to evaluate the policy at another moment.
      - For tests and for dry runs that ask "what would happen at ...". Defaults to the node's clock.
    type: str
"""
