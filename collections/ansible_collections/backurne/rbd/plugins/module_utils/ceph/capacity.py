# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Can the backup cluster take writes into the backup pool? Read once per run, before any
# snapshot or transfer, so that a full cluster or a pool over its quota fails the run at once
# with the reason, instead of `rbd import-diff` blocking (a full OSD: Ceph holds the writes until
# space comes back, for hours) or timing out minutes later naming neither the pool nor the quota.
#
# Two monitor commands, both allowed to a client with `mon 'profile rbd'` (it grants read on the
# mon and osd services; verified on 16.2): `osd dump` (per-OSD full/backfillfull/nearfull states,
# the cluster flags, each pool's flags and quota) and `osd pool get-quota POOL` (the pool's
# usage as the monitor counts it against the quota). `ceph df` is readable too but not needed;
# `ceph osd df` is a mgr command that `mgr 'profile rbd'` refuses.
#
# What blocks writes is Ceph's own verdict, the pool flags `full` (an OSD the pool maps to is
# full, or the legacy cluster-wide `full` flag) and `full_quota` (over quota): the monitor sets
# them a moment after the usage crosses the line, so the quota is also compared here directly.
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.errors import RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.report.units import human_bytes

# A quota used at or above this share is "nearly full" (the policy decides: warn or fail).
QUOTA_NEARFULL_RATIO = 0.9
NEARFULL_POLICIES = ("warn", "fail")
# Monitor commands answer in milliseconds; a monitor that does not answer is a finding of its own.
MON_TIMEOUT = 30.0


class MonitorReader(Protocol):
    """What is read through: ceph/rbd.py's RbdRunner, which uses this module for its timeout
    hint (a Protocol, not an import of the runner, keeps the dependency one way)."""

    def mon_json(
        self, command: dict[str, Any], words: Sequence[str], *, timeout: float | None = None, open_session: bool = True
    ) -> Any: ...

    def file_problem(self) -> str | None: ...


class CapacityError(Exception):
    """The state could not be read (monitor refused or unreachable, unexpected answer)."""


@dataclass(frozen=True)
class PoolState:
    """What the backup cluster says about writing into one pool."""

    pool: str
    cluster_flags: tuple[str, ...] = ()
    pool_flags: tuple[str, ...] = ()
    full_osds: tuple[int, ...] = ()
    backfillfull_osds: tuple[int, ...] = ()
    nearfull_osds: tuple[int, ...] = ()
    quota_max_bytes: int = 0
    quota_max_objects: int = 0
    used_bytes: int = 0
    used_objects: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "cluster_flags": list(self.cluster_flags),
            "pool_flags": list(self.pool_flags),
            "full_osds": list(self.full_osds),
            "backfillfull_osds": list(self.backfillfull_osds),
            "nearfull_osds": list(self.nearfull_osds),
            "quota_max_bytes": self.quota_max_bytes,
            "quota_max_objects": self.quota_max_objects,
            "used_bytes": self.used_bytes,
            "used_objects": self.used_objects,
        }


@dataclass
class Verdict:
    """Findings that stop the run (errors) and those that only warn."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _words(value: Any) -> tuple[str, ...]:
    """Ceph prints flag sets as "a,b,c" (flags, flags_names) or as a list (flags_set, state)."""
    if isinstance(value, str):
        return tuple(word for word in value.split(",") if word)
    if isinstance(value, list):
        return tuple(str(word) for word in value)
    return ()


def pool_state(pool: str, osd_dump: Any, quota: Any) -> PoolState:
    """PoolState from the JSON of `osd dump` and `osd pool get-quota POOL`."""
    if not isinstance(osd_dump, dict) or not isinstance(osd_dump.get("pools"), list):
        raise CapacityError("unexpected `osd dump` answer (no pools)")
    entry = next((p for p in osd_dump["pools"] if isinstance(p, dict) and p.get("pool_name") == pool), None)
    if entry is None:
        raise CapacityError(f"pool {pool} does not exist on the backup cluster")
    states: dict[str, list[int]] = {"full": [], "backfillfull": [], "nearfull": []}
    for osd in osd_dump.get("osds") or []:
        if not isinstance(osd, dict):
            continue
        state = _words(osd.get("state"))
        # An OSD that is down or out takes no writes: its old state is not the pool's problem.
        if "up" not in state or not osd.get("in", 1):
            continue
        for name, found in states.items():
            if name in state:
                found.append(_int(osd.get("osd")))
    quota = quota if isinstance(quota, dict) else {}
    return PoolState(
        pool=pool,
        cluster_flags=_words(osd_dump.get("flags")),
        pool_flags=_words(entry.get("flags_names")),
        full_osds=tuple(states["full"]),
        backfillfull_osds=tuple(states["backfillfull"]),
        nearfull_osds=tuple(states["nearfull"]),
        quota_max_bytes=_int(quota.get("quota_max_bytes", entry.get("quota_max_bytes"))),
        quota_max_objects=_int(quota.get("quota_max_objects", entry.get("quota_max_objects"))),
        used_bytes=_int(quota.get("current_num_bytes")),
        used_objects=_int(quota.get("current_num_objects")),
    )


def _osds(ids: tuple[int, ...]) -> str:
    return ", ".join(f"osd.{osd}" for osd in ids)


def _quota_findings(state: PoolState) -> tuple[list[str], list[str]]:
    full: list[str] = []
    near: list[str] = []
    over_flag = "full_quota" in state.pool_flags
    if state.quota_max_bytes:
        text = (
            f"max_bytes {state.quota_max_bytes} ({human_bytes(state.quota_max_bytes)}), "
            f"used {state.used_bytes} ({human_bytes(state.used_bytes)})"
        )
        if state.used_bytes >= state.quota_max_bytes:
            full.append(f"pool {state.pool} is over its quota ({text})")
        elif state.used_bytes >= QUOTA_NEARFULL_RATIO * state.quota_max_bytes:
            share = 100 * state.used_bytes / state.quota_max_bytes
            near.append(f"pool {state.pool} has used {share:.0f} % of its quota ({text})")
    if state.quota_max_objects:
        text = f"max_objects {state.quota_max_objects}, used {state.used_objects}"
        if state.used_objects >= state.quota_max_objects:
            full.append(f"pool {state.pool} is over its quota ({text})")
        elif state.used_objects >= QUOTA_NEARFULL_RATIO * state.quota_max_objects:
            share = 100 * state.used_objects / state.quota_max_objects
            near.append(f"pool {state.pool} has used {share:.0f} % of its object quota ({text})")
    if over_flag and not full:
        # The monitor says so, the numbers have moved since (or the quota was just raised).
        full.append(f"pool {state.pool} is flagged full_quota by the monitor (over its quota)")
    return full, near


def assess(state: PoolState, *, nearfull: str = "warn", writes: bool = True) -> Verdict:
    """What the state means for a run that writes into the pool.

    Full (the cluster `full` flag, a full OSD, the pool flagged full, the quota reached) fails a
    run that writes; nearfull (a nearfull or backfillfull OSD, the pool flagged nearfull, a quota
    used at 90 % or more) fails only when ``nearfull`` is "fail". A run that does not write
    (``writes`` false: expiry only, which frees space) is never stopped, only warned.
    """
    if nearfull not in NEARFULL_POLICIES:
        raise ValueError(f"nearfull policy must be one of {', '.join(NEARFULL_POLICIES)}, got {nearfull!r}")
    full: list[str] = []
    near: list[str] = []
    if "full" in state.cluster_flags:
        full.append("the backup cluster has its FULL flag set (osdmap flags)")
    if state.full_osds:
        full.append(f"OSD(s) {_osds(state.full_osds)} of the backup cluster are full")
    quota_full, quota_near = _quota_findings(state)
    full += quota_full
    if "full" in state.pool_flags and not state.full_osds and not quota_full:
        full.append(f"pool {state.pool} is flagged full by the monitor")
    if state.backfillfull_osds:
        near.append(f"OSD(s) {_osds(state.backfillfull_osds)} of the backup cluster are backfillfull")
    if state.nearfull_osds:
        near.append(f"OSD(s) {_osds(state.nearfull_osds)} of the backup cluster are nearfull")
    if not full and not state.backfillfull_osds and not state.nearfull_osds and "nearfull" in state.pool_flags:
        near.append(f"pool {state.pool} is flagged nearfull by the monitor")
    near += quota_near
    verdict = Verdict()
    if writes:
        verdict.errors += full
    else:
        verdict.warnings += full
    if writes and nearfull == "fail":
        verdict.errors += [f"{text} (backurne_nearfull=fail)" for text in near]
    else:
        verdict.warnings += near
    return verdict


def read_pool_state(
    runner: MonitorReader, pool: str, timeout: float = MON_TIMEOUT, *, open_session: bool = True
) -> PoolState:
    """Ask the backup cluster's monitor (in process when possible, else the `ceph` CLI)."""
    try:
        dump = runner.mon_json({"prefix": "osd dump"}, ["osd", "dump"], timeout=timeout, open_session=open_session)
        quota = runner.mon_json(
            {"prefix": "osd pool get-quota", "pool": pool},
            ["osd", "pool", "get-quota", pool],
            timeout=timeout,
            open_session=open_session,
        )
    except RbdError as exc:
        raise CapacityError(str(exc)) from None
    return pool_state(pool, dump, quota)


def full_pool_hint(runner: MonitorReader, pool: str, timeout: float = 10.0) -> str:
    """Why writes into ``pool`` may be blocked ("" when nothing is known), for timeout messages.

    Bounded by ``timeout`` per monitor command: it does not connect a new in-process client
    (after a timeout the cluster itself may be what does not answer).
    """
    try:
        verdict = assess(read_pool_state(runner, pool, timeout, open_session=False))
    except (CapacityError, ValueError):
        return ""
    return "; ".join(verdict.errors)


# Every message and finding of the check is about the backup cluster.
WHERE = "backup cluster"


@dataclass
class CapacityReport:
    """The check's outcome: ``failure`` (the message) is None when the run may go on; ``result``
    holds the keys the capacity module returns either way; ``warnings`` are to be shown."""

    result: dict[str, Any]
    failure: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CapacityCheck:
    """The capacity module's job: the node's keyring/conf files, then one read of the pool's
    state, then the verdict (``nearfull``: warn or fail; ``writes`` False only warns)."""

    runner: MonitorReader
    pool: str
    nearfull: str = "warn"
    writes: bool = True
    timeout: float = MON_TIMEOUT

    def run(self) -> CapacityReport:
        problem = self.runner.file_problem()
        if problem:
            return CapacityReport({"problems": [problem]}, failure=f"{WHERE}: {problem}")
        try:
            state = read_pool_state(self.runner, self.pool, timeout=max(1, self.timeout))
        except CapacityError as exc:
            return CapacityReport(
                {"problems": [str(exc)]}, failure=f"{WHERE}: cannot read the state of pool {self.pool}: {exc}"
            )
        verdict = assess(state, nearfull=self.nearfull, writes=self.writes)
        result = {"state": state.to_dict(), "problems": verdict.errors, "capacity_warnings": verdict.warnings}
        failure = None if verdict.ok else f"{WHERE} cannot take the backups: " + "; ".join(verdict.errors)
        return CapacityReport(result, failure, [f"{WHERE}: {warning}" for warning in verdict.warnings])
