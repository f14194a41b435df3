# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Holds on the backup cluster: read, set and release the `backurne.hold.<snapshot>` image-meta
# of a backup image (policy/holds.py says what a hold is). The CLI, the REST API, the web console
# and the hold module all go through these three functions.
from collections.abc import Mapping
from datetime import datetime

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    Hold,
    HoldError,
    hold_key,
    holds_from_metadata,
    new_hold,
)


def read_holds(runner: RbdRunner, spec: ImageSpec | str) -> dict[str, Hold]:
    """The holds of one backup image by snapshot name (the header omap read in process when
    python3-rados is there, else `rbd image-meta list`)."""
    return holds_from_metadata(runner.image_meta(spec))


def holds_of(
    runner: RbdRunner, spec: ImageSpec, listed: Mapping[str, Mapping[str, str]] | None
) -> dict[str, Hold] | None:
    """The holds of one image: from the listing's image-meta when it read them (``listed``, by
    image), else read now (in process from the header; only for an image retention would
    change). None when they cannot be read: the caller must then keep everything."""
    if listed is not None:
        return holds_from_metadata(listed.get(spec.image, {}))
    try:
        return read_holds(runner, spec)
    except RbdError:
        return None


def pin(
    runner: RbdRunner, spec: ImageSpec, snapshot: str, reason: object, until: object, by: object, now: datetime
) -> Hold:
    """Validate and set a hold on an existing snapshot of ``spec`` (HoldError names what is wrong)."""
    if snapshot not in runner.snapshot_names(spec):
        raise HoldError(f"backup image {spec} has no snapshot {snapshot!r}")
    hold = new_hold(snapshot, reason, until, by, now)
    write_hold(runner, spec, hold)
    return hold


def write_hold(runner: RbdRunner, spec: ImageSpec | str, hold: Hold) -> None:
    """Set (or replace) the hold of ``hold.snapshot``."""
    image = ImageSpec.of(spec)
    runner.run(["image-meta", "set", *image.options(), hold_key(hold.snapshot), hold.value()])


def remove_hold(runner: RbdRunner, spec: ImageSpec | str, snapshot: str) -> Hold | None:
    """Release the hold of ``snapshot``; the hold it was, or None when there was none."""
    image = ImageSpec.of(spec)
    current = read_holds(runner, image).get(snapshot)
    if current is None:
        return None
    runner.run(["image-meta", "remove", *image.options(), hold_key(snapshot)])
    return current
