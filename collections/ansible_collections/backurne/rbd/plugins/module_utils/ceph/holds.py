# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Holds on the backup cluster: read, set and release the `backurne.hold.<snapshot>` image-meta
# of a backup image (policy/holds.py says what a hold is). The CLI, the REST API, the web console
# and the hold module all go through these functions; HoldRequests is the hold module's job.
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    HOLD_KEY_PREFIX,
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


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class HoldRequests:
    """Set or release the holds a list of requests names (the hold module's job), then list the
    pool's holds. A request is a mapping with ``image``, ``snapshot`` (an exact name, or
    ``latest``: the image's newest of ours), ``state`` (present/absent), ``reason``, ``until``."""

    runner: RbdRunner
    pool: str
    namespace: str | None
    by: str
    check_mode: bool = False

    def snapshot_of(self, spec: ImageSpec, snapshot: str) -> str:
        """The snapshot a request names (``latest``: the image's newest of ours)."""
        if snapshot != "latest":
            return snapshot
        ours = [name for name in self.runner.snapshot_names(spec) if ";" in name]
        if not ours:
            raise HoldError(f"backup image {spec} has no snapshot to hold")
        return ours[-1]

    def apply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One request's outcome: ``image``, ``snapshot``, ``action`` (held, updated, released,
        unchanged) and the ``hold`` now in place. In check mode nothing is written."""
        spec = ImageSpec(self.pool, self.namespace, request["image"])
        snapshot = self.snapshot_of(spec, request["snapshot"])
        current = read_holds(self.runner, spec).get(snapshot)
        now = _utc_now()
        out: dict[str, Any] = {"image": spec.image, "snapshot": snapshot}
        if request["state"] == "absent":
            if current is not None and not self.check_mode:
                remove_hold(self.runner, spec, snapshot)
            return {**out, "action": "released" if current else "unchanged", "hold": None}
        wanted = new_hold(snapshot, request["reason"], request["until"], self.by, now)  # validates before anything
        if current is not None and (current.reason, current.until) == (wanted.reason, wanted.until):
            return {**out, "action": "unchanged", "hold": current.to_dict()}
        if not self.check_mode:
            pin(self.runner, spec, snapshot, request["reason"], request["until"], self.by, now)
        return {**out, "action": "updated" if current else "held", "hold": wanted.to_dict()}

    def pool_holds(self) -> list[dict[str, Any]]:
        """Every hold of the pool (one listing pass, with the image headers), by image name."""
        _listing, metas = self.runner.list_images_with_meta(self.pool, self.namespace, HOLD_KEY_PREFIX)
        now = _utc_now()
        return [
            {"image": image, **hold.to_dict(now)}
            for image in sorted(metas)
            for hold in holds_from_metadata(metas[image]).values()
        ]

    def run(self, requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The module's result. A request that fails stops the run: HoldRequestFailed carries the
        message naming the image and snapshot, and the requests done before it."""
        done: list[dict[str, Any]] = []
        for request in requests:
            try:
                done.append(self.apply(request))
            except (HoldError, RbdError, ValueError) as exc:
                raise HoldRequestFailed(
                    f"image {request['image']!r} snapshot {request['snapshot']!r}: {exc}", done
                ) from exc
        try:
            current = self.pool_holds()
        except RbdError as exc:
            raise HoldRequestFailed(f"cannot list the holds of pool {self.pool}: {exc}", done) from exc
        return {"changed": any(item["action"] != "unchanged" for item in done), "holds": done, "current": current}


class HoldRequestFailed(Exception):
    """A hold request (or the listing after them) failed; ``done`` holds the requests applied before."""

    def __init__(self, msg: str, done: list[dict[str, Any]]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.done = done
