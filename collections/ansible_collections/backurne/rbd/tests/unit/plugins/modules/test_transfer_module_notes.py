# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The transfer module's face for what the pipeline has to say: its notes reach the image's
# `note` (joined, after a broken stale lock's), its options reach transfer_snapshot, and bad
# timeouts are refused. The pipeline and Ceph are replaced by recording fakes here; the real
# data path is tested against the lab (tests/integration/test_faults_transfer.py).
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import Lock
from ansible_collections.backurne.rbd.plugins.module_utils.stream import backup_job
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import TransferResult
from ansible_collections.backurne.rbd.plugins.modules import transfer as module

S0 = "backup;daily;7;2026-01-01T00:00:00.000000"
S1 = "backup;daily;7;2026-01-02T00:00:00.000000"
S2 = "backup;daily;7;2026-01-03T00:00:00.000000"


class FakeRunner:
    snapshots: ClassVar[dict[str, list[str]]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.is_remote = "ssh" in kwargs and kwargs["ssh"] is not None

    def exists(self, spec: Any) -> bool:
        return spec.image in self.snapshots

    def snapshot_names(self, spec: Any) -> list[str]:
        return list(self.snapshots[spec.image])

    def head_differs(self, spec: Any) -> bool:
        # The HEAD guard (module_utils/stream/head_guard.py) has its own tests: HEAD is clean here.
        return False


class Recorder:
    def __init__(self, outcomes: dict[str, TransferResult]) -> None:
        self.outcomes = outcomes
        self.calls: list[dict[str, Any]] = []

    def __call__(self, live: Any, backup: Any, *args: Any, **kwargs: Any) -> TransferResult:
        snapshot = args[3]
        self.calls.append({"snapshot": snapshot, "base": args[4], **kwargs, "present": set(kwargs["present"])})
        return self.outcomes[snapshot]


def lock(image: str, broke_stale: str | None = None) -> Lock:
    return Lock("bk", None, image, "backurne;h;1;t", "client.1", "rbd_header.1", broke_stale=broke_stale, size=1 << 30)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Recorder]:
    def install(outcomes: dict[str, TransferResult], snapshots: dict[str, list[str]], stale: str | None = None):
        FakeRunner.snapshots = snapshots
        recorder = Recorder(outcomes)
        monkeypatch.setattr(module, "RbdRunner", FakeRunner)
        monkeypatch.setattr(backup_job, "transfer_snapshot", recorder)
        monkeypatch.setattr(backup_job, "try_acquire", lambda runner, pool, ns, image, **kw: lock(image, stale))
        monkeypatch.setattr(backup_job, "release", lambda runner, held: None)
        return recorder

    return install


def sent(snapshot: str, base: str | None, ok: bool = True, notes: list[str] | None = None, **kw: Any) -> TransferResult:
    result = TransferResult("rbd/web", "bk/c;web;None", snapshot, base, "incremental", ok=ok, **kw)
    result.notes.extend(notes or [])
    return result


def args(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    plan = {
        "image": "web",
        "backup_image": "c;web;None",
        "transfers": [{"from_snap": S0, "to_snap": S1}, {"from_snap": S1, "to_snap": S2}],
    }
    return {
        "live_host": "live1",
        "pool": "bk",
        "source_pool": "rbd",
        "plans": [plan],
        "progress": False,
        "state_dir": str(tmp_path),
        **extra,
    }


def test_pipeline_notes_reach_the_image_note(run_module: Callable[..., Any], fakes: Any, tmp_path: Path) -> None:
    recorder = fakes(
        {
            S1: sent(S1, S0, notes=["destination existed without a common base: HEAD emptied, its snapshots kept"]),
            S2: sent(S2, S1),
        },
        {"c;web;None": [S0]},
        stale="lock of dead pid 42 broken",
    )
    out = run_module(module.main, args(tmp_path))
    (image,) = out["images"]
    assert image["status"] == "transferred" and image["snapshots"] == [S1, S2]
    where = "image 'web' -> backup image 'c;web;None'"
    assert image["note"] == (
        f"{where}: broke a stale lock (lock of dead pid 42 broken); "
        f"{where}: snapshot {S1!r}: destination existed without a common base: HEAD emptied, its snapshots kept"
    )
    # What was on the backup image before each step goes down (a failed step never removes it).
    assert [call["present"] for call in recorder.calls] == [{S0}, {S0, S1}]
    assert [call["stall_timeout"] for call in recorder.calls] == [300, 300]
    assert [call["timeout"] for call in recorder.calls] == [21600, 21600]
    assert {call["snap_prefix"] for call in recorder.calls} == {"backup"}


def test_failed_step_note_and_error(run_module: Callable[..., Any], fakes: Any, tmp_path: Path) -> None:
    removed = f"removed snapshot {S1!r} that the failed transfer had left on the backup image (not trusted)"
    fakes(
        {
            S1: sent(
                S1,
                S0,
                ok=False,
                failed_stage="import",
                error="import: Operation not permitted writing to the backup cluster (…) (exit status 0)",
                notes=[removed],
            )
        },
        {"c;web;None": [S0]},
    )
    out = run_module(module.main, args(tmp_path, fail_on_error=False, stall_timeout=0, timeout=60))
    (image,) = out["images"]
    assert (image["status"], image["ok"], image["snapshots"]) == ("failed", False, [])
    assert image["error"].startswith(f"image 'web' -> backup image 'c;web;None': snapshot {S1!r}: import failed: ")
    assert "Operation not permitted writing to the backup cluster" in image["error"]
    assert image["note"] == f"image 'web' -> backup image 'c;web;None': snapshot {S1!r}: {removed}"
    # The failed step's snapshot is not reported on the backup side.
    assert out["backup_snapshots"] == {"c;web;None": [S0]}


def test_nothing_to_say_means_no_note(run_module: Callable[..., Any], fakes: Any, tmp_path: Path) -> None:
    recorder = fakes({S1: sent(S1, S0), S2: sent(S2, S1)}, {"c;web;None": [S0]})
    out = run_module(module.main, args(tmp_path, stall_timeout=0))
    assert "note" not in out["images"][0]
    assert [call["stall_timeout"] for call in recorder.calls] == [None, None]  # 0: the watch is off


@pytest.mark.parametrize(("option", "value"), [("stall_timeout", -1), ("timeout", 0)])
def test_bad_timeouts_are_refused(
    run_module: Callable[..., Any], fakes: Any, tmp_path: Path, option: str, value: int
) -> None:
    recorder = fakes({}, {"c;web;None": [S0]})
    out = run_module(module.main, args(tmp_path, **{option: value}))
    assert out["failed"] and f"{option}={value}" in out["msg"]
    assert recorder.calls == []
