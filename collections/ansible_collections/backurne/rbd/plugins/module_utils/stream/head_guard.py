# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The HEAD guard, run under the backup lock before an incremental into an existing backup image.
#
# `rbd import-diff --from-snap BASE` only checks that BASE exists on the destination, then
# applies the diff to whatever the image's HEAD holds and snapshots the result. A HEAD that is
# not BASE's content gets baked into the new backup snapshot:
# - somebody (a restore test, a mistaken mount) wrote into the backup image;
# - a backup snapshot found unequal to live was removed (self-healing, see checksum.py): HEAD
#   still holds that snapshot's data while the next incremental starts from the older base;
# - the newest backup snapshot is not the base (the live copy of it was removed by hand).
# So HEAD is compared with the base itself, not merely with the newest snapshot, and reset to
# it when they differ. The comparison is cheap (the object map); the rollback writes every
# object, which is why it only runs when needed.
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdRunner


def reset_written_head(backup: RbdRunner, dest: ImageSpec, base: str, timeout: float | None = None) -> str | None:
    """Roll dest's HEAD back to `base` if it differs from it; the note to report, or None.

    Raises RbdError when HEAD cannot be compared or reset: the caller must not import a diff
    on top of a HEAD it does not know (the image fails, nothing is written).
    """
    image = dest.at(None)
    if not backup.head_differs(image.at(base)):
        return None
    backup.snap_rollback(image.at(base), timeout=timeout)
    return (
        f"HEAD of backup image {image.image!r} had writes since snapshot {base!r}: "
        "rolled back to it before the incremental"
    )
