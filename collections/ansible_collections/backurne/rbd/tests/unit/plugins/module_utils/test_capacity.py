# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.capacity import (
    CapacityError,
    PoolState,
    assess,
    full_pool_hint,
    human_bytes,
    pool_state,
    read_pool_state,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdError, RbdRunner

MiB = 1024 * 1024


def osd_dump(
    pool_flags: str = "hashpspool,selfmanaged_snaps",
    osd_states: list[list[str]] | None = None,
    flags: str = "sortbitwise,recovery_deletes",
    quota_max_bytes: int = 0,
) -> dict[str, Any]:
    """The parts of a 16.2 `ceph osd dump --format json` that are read (same field names)."""
    states = osd_states if osd_states is not None else [["exists", "up"]]
    return {
        "flags": flags,
        "pools": [
            {"pool_name": "device_health_metrics", "flags_names": "hashpspool,full", "quota_max_bytes": 0},
            {"pool_name": "rbd", "flags_names": pool_flags, "quota_max_bytes": quota_max_bytes, "quota_max_objects": 0},
        ],
        "osds": [{"osd": index, "up": 1, "in": 1, "state": state} for index, state in enumerate(states)],
    }


def quota(max_bytes: int = 0, used: int = 0, max_objects: int = 0, objects: int = 0) -> dict[str, Any]:
    """`ceph osd pool get-quota rbd --format json` (16.2)."""
    return {
        "pool_name": "rbd",
        "pool_id": 1,
        "quota_max_objects": max_objects,
        "current_num_objects": objects,
        "quota_max_bytes": max_bytes,
        "current_num_bytes": used,
    }


class TestPoolState:
    def test_reads_flags_osds_and_quota(self) -> None:
        state = pool_state(
            "rbd",
            osd_dump("hashpspool,full,full_quota", [["exists", "up"], ["exists", "nearfull", "up"]]),
            quota(10 * MiB, 64 * MiB),
        )
        assert state.pool_flags == ("hashpspool", "full", "full_quota")
        assert state.nearfull_osds == (1,) and state.full_osds == ()
        assert (state.quota_max_bytes, state.used_bytes) == (10 * MiB, 64 * MiB)
        assert state.to_dict()["nearfull_osds"] == [1]

    def test_down_or_out_osds_do_not_count(self) -> None:
        dump = osd_dump(osd_states=[["exists", "full"], ["exists", "up", "full"]])
        dump["osds"][1]["in"] = 0
        assert pool_state("rbd", dump, quota()).full_osds == ()

    def test_missing_pool_is_named(self) -> None:
        with pytest.raises(CapacityError, match="pool backups does not exist"):
            pool_state("backups", osd_dump(), quota())

    def test_garbage_answer(self) -> None:
        with pytest.raises(CapacityError):
            pool_state("rbd", {"epoch": 1}, quota())


class TestAssess:
    def test_healthy_pool_passes_silently(self) -> None:
        verdict = assess(pool_state("rbd", osd_dump(), quota(100 * MiB, 10 * MiB)))
        assert verdict.ok and verdict.warnings == []

    def test_over_quota_names_pool_quota_and_usage(self) -> None:
        verdict = assess(pool_state("rbd", osd_dump("hashpspool,full,full_quota"), quota(10 * MiB, 64 * MiB)))
        assert verdict.errors == [
            f"pool rbd is over its quota (max_bytes {10 * MiB} (10.0 MiB), used {64 * MiB} (64.0 MiB))"
        ]

    def test_over_quota_before_the_monitor_flags_it(self) -> None:
        # The flag follows the usage by a moment; the numbers alone are enough.
        verdict = assess(pool_state("rbd", osd_dump(), quota(10 * MiB, 10 * MiB)))
        assert not verdict.ok and "over its quota" in verdict.errors[0]

    def test_object_quota(self) -> None:
        verdict = assess(pool_state("rbd", osd_dump(), quota(max_objects=100, objects=100)))
        assert verdict.errors == ["pool rbd is over its quota (max_objects 100, used 100)"]

    def test_flag_without_numbers_still_fails(self) -> None:
        verdict = assess(pool_state("rbd", osd_dump("hashpspool,full_quota"), quota()))
        assert verdict.errors == ["pool rbd is flagged full_quota by the monitor (over its quota)"]

    def test_full_osd_and_cluster_flag_are_named(self) -> None:
        dump = osd_dump("hashpspool,full", [["exists", "up"], ["exists", "up", "full"]], flags="full,sortbitwise")
        verdict = assess(pool_state("rbd", dump, quota()))
        assert verdict.errors == [
            "the backup cluster has its FULL flag set (osdmap flags)",
            "OSD(s) osd.1 of the backup cluster are full",
        ]

    def test_pool_flagged_full_alone(self) -> None:
        verdict = assess(pool_state("rbd", osd_dump("hashpspool,full"), quota()))
        assert verdict.errors == ["pool rbd is flagged full by the monitor"]

    def test_another_pools_flags_do_not_matter(self) -> None:
        # device_health_metrics is flagged full in the fixture; the backup pool is not.
        assert assess(pool_state("rbd", osd_dump(), quota())).ok

    @pytest.mark.parametrize(
        ("dump", "limits", "needle"),
        [
            (osd_dump(osd_states=[["exists", "nearfull", "up"]]), quota(), "osd.0 of the backup cluster are nearfull"),
            (osd_dump(osd_states=[["exists", "backfillfull", "up"]]), quota(), "are backfillfull"),
            (osd_dump("hashpspool,nearfull"), quota(), "pool rbd is flagged nearfull"),
            (osd_dump(), quota(100 * MiB, 95 * MiB), "pool rbd has used 95 % of its quota"),
            (osd_dump(), quota(max_objects=10, objects=9), "90 % of its object quota"),
        ],
    )
    def test_nearfull_policy(self, dump: dict[str, Any], limits: dict[str, Any], needle: str) -> None:
        state = pool_state("rbd", dump, limits)
        warned = assess(state)
        assert warned.ok and len(warned.warnings) == 1 and needle in warned.warnings[0]
        failed = assess(state, nearfull="fail")
        assert not failed.ok and needle in failed.errors[0] and "backurne_nearfull=fail" in failed.errors[0]

    def test_quota_below_ninety_percent_is_quiet(self) -> None:
        assert assess(pool_state("rbd", osd_dump(), quota(100 * MiB, 89 * MiB)), nearfull="fail").warnings == []

    def test_a_run_that_only_expires_is_warned_not_stopped(self) -> None:
        state = pool_state("rbd", osd_dump("hashpspool,full,full_quota"), quota(MiB, 2 * MiB))
        verdict = assess(state, nearfull="fail", writes=False)
        assert verdict.ok and "over its quota" in verdict.warnings[0]

    def test_unknown_policy(self) -> None:
        with pytest.raises(ValueError, match="warn, fail"):
            assess(PoolState("rbd"), nearfull="ignore")


def test_human_bytes() -> None:
    assert human_bytes(19) == "19 B"
    assert human_bytes(10 * MiB) == "10.0 MiB"
    assert human_bytes(3 * 1024 * MiB) == "3.0 GiB"


# -- reading the monitor through the `ceph` CLI (no python3-rados in this venv) -------------------

FAKE_CEPH = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CEPH_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_CEPH_MODE") == "denied":
    sys.stderr.write("Error EACCES: access denied\n")
    sys.exit(13)
if "dump" in args:
    print(json.dumps({dump}))
else:
    print(json.dumps({quota}))
"""


@pytest.fixture
def fake_ceph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ceph"
    dump = osd_dump("hashpspool,full,full_quota")
    script.write_text(FAKE_CEPH.format(python=sys.executable, dump=repr(dump), quota=repr(quota(MiB, 3 * MiB))))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_CEPH_LOG", str(log))
    return log


def test_read_pool_state_through_the_cli(fake_ceph: Path) -> None:
    runner = RbdRunner(CephAccess("ceph", "backurne"), in_process=False)
    state = read_pool_state(runner, "rbd")
    assert state.quota_max_bytes == MiB and "full_quota" in state.pool_flags
    calls = fake_ceph.read_text().splitlines()
    assert calls == [
        '["--cluster", "ceph", "--id", "backurne", "osd", "dump", "--format=json"]',
        '["--cluster", "ceph", "--id", "backurne", "osd", "pool", "get-quota", "rbd", "--format=json"]',
    ]
    assert "over its quota" in full_pool_hint(runner, "rbd")


def test_refusal_is_a_capacity_error(fake_ceph: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CEPH_MODE", "denied")
    runner = RbdRunner(CephAccess("ceph", "backurne"), in_process=False)
    with pytest.raises(CapacityError, match="EACCES"):
        read_pool_state(runner, "rbd")
    assert full_pool_hint(runner, "rbd") == ""


def test_a_timed_out_command_names_the_full_pool(fake_ceph: Path, tmp_path: Path) -> None:
    # An `rbd` that hangs, as import-diff does on a full pool; the hint comes from the monitor.
    (tmp_path / "bin" / "rbd").write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    (tmp_path / "bin" / "rbd").chmod(0o755)
    runner = RbdRunner(CephAccess("ceph", "backurne"), in_process=False, default_timeout=0.5)
    with pytest.raises(RbdError) as info:
        runner.run(["snap", "create", "--pool=rbd", "--image=x", "--snap=s"])
    assert "timed out after 0.5 s, probably because pool rbd is over its quota" in str(info.value)
