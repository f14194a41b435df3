# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The restore module's job: a batch of restore requests (restore.py restores one). The whole
# batch is validated (planned) before anything is touched, so one bad request changes nothing;
# then the restores run with a bounded pool of workers, a failed one alone. No Ansible import:
# the module is a face over RestoreBatch.
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import (
    RestoreError,
    RestorePlan,
    RestoreRequest,
    plan_restore,
    restore_snapshot,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import NodeThrottle
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import StreamOptions


class RestoreBatchFailed(Exception):
    """Restores failed (or were refused before any ran): the message, and the module's result."""

    def __init__(self, msg: str, output: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.output = output


@dataclass(frozen=True)
class RestoreSettings:
    """The options of one restore batch, validated (module_base/factory.py)."""

    pool: str
    namespace: str | None
    target_pool: str
    target_namespace: str | None
    snap_prefix: str
    verify: bool
    hasher: Sequence[str]
    workers: int
    stream: StreamOptions
    check_mode: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **derived: Any) -> RestoreSettings:
        """The module's own options as they are; ``derived``: the validated ones (stream, check_mode)."""
        own = ("pool", "namespace", "target_pool", "target_namespace", "snap_prefix", "verify", "hasher", "workers")
        return cls(**{key: params[key] for key in own}, **derived)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


def restore_requests(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The requests: `restores`, or the one of image/snapshot/target_image/force. ValueError on an empty hasher."""
    if not params["hasher"]:
        raise ValueError("hasher must not be empty")
    if params["restores"] is not None:
        return [dict(item) for item in params["restores"]]
    keys = ("image", "snapshot", "target_image", "force")
    return [{key: params[key] for key in keys}]


def planned_result(request: Mapping[str, Any], plan: RestorePlan | None) -> dict[str, Any]:
    return {
        "image": request["image"],
        "status": "planned",
        "ok": True,
        "source": plan.source if plan else None,
        "snapshot": plan.snapshot if plan else None,
        "target": plan.target if plan else None,
        "action": plan.action if plan else None,
        "created": False,
        "kept_as": plan.kept_as if plan else None,
        "size_bytes": plan.size_bytes if plan else 0,
        "bytes_logical": 0,
        "bytes_wire": 0,
        "duration": 0.0,
        "checksum_source": None,
        "checksum_target": None,
        "failed_stage": None,
        "error": None,
        "notes": [],
        "plan": plan.to_dict() if plan else None,
    }


def restore_diff(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Diff mode: each target (and a replaced image's kept name) before and after."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for item in results:
        plan = item["plan"]
        if not plan or not item["ok"]:
            continue
        target = plan["target"]
        if plan["target_exists"]:
            before[target] = {"exists": True, "size_bytes": plan["target_size_bytes"]}
            kept = "/".join(part for part in (plan["target_pool"], plan["target_namespace"], item["kept_as"]) if part)
            before[kept] = {"exists": False}
            after[kept] = {"exists": True, "size_bytes": plan["target_size_bytes"], "content": f"previous {target}"}
        else:
            before[target] = {"exists": False}
        after[target] = {"exists": True, "size_bytes": plan["size_bytes"], "content": plan["source"]}
    return {"before": before, "after": after}


def _failure_message(results: list[dict[str, Any]]) -> str | None:
    failed = [r for r in results if not r["ok"]]
    return "; ".join(r["error"] for r in failed) if failed else None


class RestoreBatch:
    """Plans every request, then (unless check mode) restores them; see run()."""

    def __init__(self, backup: RbdRunner, live: RbdRunner, settings: RestoreSettings) -> None:
        self.backup = backup
        self.live = live
        self.settings = settings
        self.now = datetime.now(UTC)
        # The bandwidth limit: one bucket per restore stream, and this process's node total.
        self.throttles = NodeThrottle(settings.stream.bwlimit)

    def _restore_request(self, request: Mapping[str, Any]) -> RestoreRequest:
        """What plan_restore and restore_snapshot both take: the module's pools, the request's image."""
        s = self.settings
        return RestoreRequest(
            s.pool,
            s.namespace,
            request["image"],
            request["snapshot"],
            s.target_pool,
            s.target_namespace,
            request["target_image"],
            request["force"],
        )

    def plan_all(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request's planned result; a bad one (or two onto one target) failed at `validate`."""
        results: list[dict[str, Any]] = []
        for request in requests:
            what = f"restore of {request['image']!r}@{request['snapshot']!r}"
            try:
                plan = plan_restore(
                    self.backup, self.live, self._restore_request(request), self.settings.snap_prefix, self.now
                )
            except (RestoreError, RbdError, ValueError) as exc:
                result = planned_result(request, None)
                result.update(status="failed", ok=False, failed_stage="validate", error=f"{what}: {exc}")
                results.append(result)
                continue
            results.append(planned_result(request, plan))
        targets = [r["target"] for r in results if r["target"]]
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        for result in results:
            if result["target"] in duplicates:
                several = f"target {result['target']} is the target of several restores"
                error = f"restore of {result['image']!r}: {several}"
                result.update(status="failed", ok=False, failed_stage="validate", error=error)
        return results

    def restore_one(self, request: Mapping[str, Any], planned: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        done = restore_snapshot(
            self.backup,
            self.live,
            self._restore_request(request),
            s.stream,
            snap_prefix=s.snap_prefix,
            verify=s.verify,
            hasher=s.hasher,
            now=self.now,
            throttle=self.throttles.for_stream(),
        )
        result = {**planned, **done.to_dict(), "status": "restored" if done.ok else "failed"}
        if not done.ok:
            result["error"] = (
                f"restore of {request['image']!r}@{request['snapshot']!r} onto {planned['target']}: {done.error}"
            )
        return result

    def run(self, requests: list[dict[str, Any]], diff: bool = False) -> dict[str, Any]:
        """The module's result; RestoreBatchFailed (with the result) when a restore failed or was refused."""
        if not requests:
            return {"changed": False, "restores": []}
        results = self.plan_all(requests)
        refused = _failure_message(results)
        if refused:
            raise RestoreBatchFailed(refused, {"changed": False, "restores": results})
        if self.settings.check_mode:
            # A check run predicts a change for every planned restore.
            changed = any(r["ok"] for r in results)
        else:
            planned = results

            def on_error(index: int, exc: BaseException) -> dict[str, Any]:
                return {**planned[index], "status": "failed", "ok": False, "failed_stage": "stream", "error": str(exc)}

            results = run_batch(
                list(range(len(requests))),
                lambda index: self.restore_one(requests[index], planned[index]),
                self.settings.workers,
                on_error=on_error,
            )
            # A failed restore undid what it did, unless its notes say otherwise (the image it
            # created or the renamed one still there).
            changed = any(r["ok"] or r["created"] or r["kept_as"] for r in results)
        output: dict[str, Any] = {"changed": changed, "restores": results}
        if diff:
            output["diff"] = restore_diff(results)
        failed = _failure_message(results)
        if failed:
            raise RestoreBatchFailed(failed, output)
        return output
