# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    PveAuth,
    PveError,
    ThawPolicy,
    fetch_profiles,
    frozen,
    run_hook,
    snapshot_guest,
    thaw_and_verify,
)

VERIFIED = ["fsfreeze-freeze", "fsfreeze-thaw", "fsfreeze-status"]


class FakeApi:
    """A guest agent behind the API, recording calls.

    ``fail`` maps a command to an exception (raised ``times[command]`` times, default always);
    with ``effect`` the command changes the guest although it fails (a freeze answered 500 that
    froze); ``hang`` maps a command to a delay. ``fsfreeze-status`` answers the guest's state.
    """

    def __init__(
        self,
        fail: dict[str, Exception] | None = None,
        hang: dict[str, float] | None = None,
        times: dict[str, int] | None = None,
        effect: bool = False,
    ) -> None:
        self.calls: list[str] = []
        self.fail = fail or {}
        self.hang = hang or {}
        self.times = times or {}
        self.effect = effect
        self.state = "thawed"

    def get(self, path: str, **params: Any) -> Any:
        raise AssertionError(f"unexpected GET {path}")

    def post(self, path: str, **params: Any) -> Any:
        command = path.rsplit("/", 1)[-1]
        self.calls.append(command)
        if command in self.hang:
            time.sleep(self.hang[command])
        if command in self.fail and self.times.get(command, 1) > 0:
            if command in self.times:
                self.times[command] -= 1
            if self.effect:
                self._apply(command)
            raise self.fail[command]
        if command == "fsfreeze-status":
            return {"result": self.state}
        self._apply(command)
        return {"result": 2}

    def _apply(self, command: str) -> None:
        self.state = {"fsfreeze-freeze": "frozen", "fsfreeze-thaw": "thawed"}.get(command, self.state)


GUEST = {"vmid": 100, "name": "web1", "node": "pve1", "type": "qemu", "freeze": True}


def plans(*disks: str) -> list[dict[str, Any]]:
    return [
        {
            "image": f"vm-100-disk-{i}",
            "disk": disk,
            "backup_image": f"u;{disk};web1",
            "new_snapshots": ["backup;daily;7;2026-01-01T00:00:00.000000"],
            "transfers": [{"from_snap": None, "to_snap": "backup;daily;7;2026-01-01T00:00:00.000000"}],
            "due": ["daily"],
            "kind": "full",
            "ok": True,
        }
        for i, disk in enumerate(disks)
    ]


def recorder(api: FakeApi, fail_on: str | None = None) -> tuple[list[str], Any]:
    made: list[str] = []

    def create(plan: dict[str, Any]) -> None:
        # The guest must be frozen while every one of its disks is snapshotted.
        assert api.state == "frozen" or "fsfreeze-freeze" in api.fail or "fsfreeze-freeze" in api.hang
        if plan["disk"] == fail_on:
            raise RuntimeError("rbd snap create: No space left")
        made.append(plan["disk"])

    return made, create


def test_freeze_once_snapshot_all_then_thaw() -> None:
    api = FakeApi()
    made, create = recorder(api)
    batch = plans("scsi0", "scsi1", "efidisk0")
    warnings, calls = snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert made == ["scsi0", "scsi1", "efidisk0"]
    assert api.calls == VERIFIED
    assert calls == api.calls and warnings == []
    assert api.state == "thawed"
    assert all(plan["freeze"] == {"state": "thawed", "message": None} for plan in batch)


def test_thaw_when_a_snapshot_fails_halfway() -> None:
    api = FakeApi()
    made, create = recorder(api, fail_on="scsi1")
    batch = plans("scsi0", "scsi1", "scsi2")
    snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert api.calls == VERIFIED
    assert made == ["scsi0", "scsi2"]  # the others go on
    assert batch[1]["ok"] is False and "No space left" in batch[1]["error"]
    assert batch[1]["transfers"] == []


def test_thaw_when_the_block_raises() -> None:
    api = FakeApi()
    with pytest.raises(KeyboardInterrupt), frozen(api, "pve1", 100, "guest 100", 5):
        raise KeyboardInterrupt
    assert api.calls == VERIFIED and api.state == "thawed"


@pytest.mark.parametrize(
    "why", ["QEMU guest agent is not running", "No QEMU guest agent configured", "VM 100 is not running"]
)
def test_agent_not_answering_gives_crash_consistent_snapshot(why: str) -> None:
    api = FakeApi(fail={"fsfreeze-freeze": PveError(f"POST x: 500 Internal Server Error: {why}", 500)})
    made, create = recorder(api)
    batch = plans("scsi0")
    warnings, _calls = snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert made == ["scsi0"]  # not skipped
    assert any("crash-consistent" in w and why in w for w in warnings)
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw"]  # balanced; never reached the guest: no status
    assert batch[0]["freeze"]["state"] == "not-frozen"


def test_freeze_timeout_still_thaws_once_the_late_freeze_landed() -> None:
    # The freeze answers after 0.6 s (freeze_timeout 0.2): the snapshots do not wait for it, the
    # thaw phase does (a thaw before the freeze lands would be overtaken by it).
    api = FakeApi(hang={"fsfreeze-freeze": 0.6})
    made, create = recorder(api)
    batch = plans("scsi0")
    warnings, _calls = snapshot_guest(GUEST, batch, create, api, {}, 5, True, 0.2, thaw_timeout=30)
    assert made == ["scsi0"]
    assert any("no answer after 0.2 s" in w for w in warnings)
    assert api.state == "thawed" and api.calls[-2:] == ["fsfreeze-thaw", "fsfreeze-status"]
    assert batch[0]["freeze"]["state"] == "thawed"


def test_freeze_500_that_froze_is_thawed_and_verified() -> None:
    qga = PveError("500 Internal Server Error: VM 100 qmp command 'guest-fsfreeze-freeze' failed - timeout", 500)
    api = FakeApi(fail={"fsfreeze-freeze": qga}, effect=True)
    made, create = recorder(api)
    batch = plans("scsi0")
    warnings, _calls = snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert made == ["scsi0"] and api.state == "thawed"
    assert api.calls == VERIFIED
    assert any("may still have reached the guest" in w for w in warnings)
    assert batch[0]["freeze"]["state"] == "thawed"


def test_thaw_never_confirmed_marks_the_guest_may_be_frozen() -> None:
    api = FakeApi(fail={"fsfreeze-thaw": PveError("POST x: Connection refused")})
    batch = plans("scsi0", "scsi1")
    snapshot_guest(GUEST, batch, lambda p: None, api, {}, 5, True, 5, thaw_timeout=0)
    assert api.state == "frozen"
    assert api.calls == VERIFIED  # one round at least, even with no time
    for plan in batch:
        assert plan["freeze"]["state"] == "may-be-frozen"
        assert "guest 100 (web1) on node pve1 may be frozen" in plan["freeze"]["message"]
        assert "'frozen'" in plan["freeze"]["message"]
        assert plan["ok"] is True  # the snapshots themselves are fine


DENIED = PveError(
    "POST x: 403 Forbidden: Permission check failed "
    "(/vms/100, VM.GuestAgent.FileSystemMgmt|VM.GuestAgent.Unrestricted)",
    403,
)


def test_freeze_denied_fails_the_guest_by_default() -> None:
    api = FakeApi(fail={"fsfreeze-freeze": DENIED})
    made, create = recorder(api)
    batch = plans("scsi0", "scsi1")
    batch[1]["transfers"].insert(0, {"from_snap": None, "to_snap": "backup;daily;7;2025-12-31T00:00:00.000000"})
    snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert made == [] and api.calls == ["fsfreeze-freeze"]  # no thaw: it would be refused too
    for plan in batch:
        assert plan["ok"] is False and plan["new_snapshots"] == []
        assert "guest 100 (web1)" in plan["error"] and "VM.GuestAgent.FileSystemMgmt" in plan["error"]
        assert "on_freeze_denied" in plan["error"]
        assert plan["freeze"]["state"] == "denied"
    assert batch[0]["transfers"] == []
    assert [t["to_snap"] for t in batch[1]["transfers"]] == ["backup;daily;7;2025-12-31T00:00:00.000000"]


def test_freeze_denied_crash_consistent_when_asked() -> None:
    api = FakeApi(fail={"fsfreeze-freeze": DENIED})
    made, create = recorder(api)
    batch = plans("scsi0")
    warnings, _calls = snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5, on_freeze_denied="crash_consistent")
    assert made == ["scsi0"] and batch[0]["ok"] is True
    assert any("refused" in w and "crash-consistent" in w for w in warnings)


# -- the thaw loop, on a fake clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def direct(fn: Any, timeout: float) -> Any:
    return fn()


def run_loop(api: FakeApi, clock: FakeClock, timeout: float = 60, in_flight: Any = lambda: False) -> Any:
    calls: list[str] = []
    result = thaw_and_verify(
        api,
        "pve1",
        100,
        ThawPolicy(timeout=timeout, call_timeout=5),
        in_flight,
        calls,
        call=direct,
        clock=clock,
        sleep=clock.sleep,
    )
    return result, calls


def test_thaw_failing_three_times_then_ok() -> None:
    api = FakeApi(fail={"fsfreeze-thaw": PveError("500 got timeout", 500)}, times={"fsfreeze-thaw": 3})
    api.state = "frozen"
    clock = FakeClock()
    result, calls = run_loop(api, clock)
    assert result.thawed and api.state == "thawed"
    assert calls == ["fsfreeze-thaw", "fsfreeze-status"] * 4
    assert clock.pauses == [0.5, 1.0, 2.0]  # backoff


def test_thaw_gives_up_at_the_deadline() -> None:
    api = FakeApi(fail={"fsfreeze-thaw": PveError("POST x: Connection refused")})
    api.state = "frozen"
    clock = FakeClock()
    result, calls = run_loop(api, clock, timeout=20)
    assert not result.thawed and "'frozen'" in result.detail
    assert sum(clock.pauses) == 20  # exactly the budget, the last pause cut short
    assert max(clock.pauses) == 5.0
    assert calls.count("fsfreeze-status") == len(clock.pauses) + 1


def test_status_unreachable_is_not_thawed() -> None:
    api = FakeApi(fail={"fsfreeze-status": PveError("POST x: Connection reset by peer")})
    result, _calls = run_loop(api, FakeClock(), timeout=3)
    assert not result.thawed and "Connection reset" in result.detail


def test_thawed_status_does_not_count_while_our_freeze_is_in_flight() -> None:
    # A concurrent agent: the thaw overtakes the slow freeze, which lands two rounds later.
    api = FakeApi()
    clock = FakeClock()
    rounds = {"n": 0}

    def in_flight() -> bool:
        rounds["n"] += 1
        if rounds["n"] == 3:  # the freeze lands now, after two thaws
            api.state = "frozen"
        return rounds["n"] < 3

    result, calls = run_loop(api, clock, in_flight=in_flight)
    assert result.thawed and api.state == "thawed"
    assert calls.count("fsfreeze-thaw") == 3


def test_freeze_never_answering_is_not_thawed() -> None:
    result, _calls = run_loop(FakeApi(), FakeClock(), timeout=10, in_flight=lambda: True)
    assert not result.thawed and "has not answered" in result.detail


def test_status_refused_falls_back_on_the_thaw_answer() -> None:
    status_denied = PveError("403 Forbidden: Permission check failed (/vms/100, VM.GuestAgent.Audit)", 403)
    api = FakeApi(fail={"fsfreeze-status": status_denied})
    api.state = "frozen"
    result, calls = run_loop(api, FakeClock())
    assert result.thawed and calls == ["fsfreeze-thaw", "fsfreeze-status"]
    assert "VM.GuestAgent.Audit" in result.warnings[0]


@pytest.mark.parametrize(
    "guest",
    [dict(GUEST, freeze=False), dict(GUEST, type="lxc", freeze=False)],
    ids=["stopped-or-agent-off", "container"],
)
def test_not_frozen(guest: dict[str, Any]) -> None:
    api = FakeApi()
    made = []
    snapshot_guest(guest, plans("scsi0"), lambda p: made.append(p["disk"]), api, {}, 5, True, 5)
    assert made == ["scsi0"] and api.calls == []


def test_freeze_switched_off() -> None:
    api = FakeApi()
    snapshot_guest(GUEST, plans("scsi0"), lambda p: None, api, {}, 5, False, 5)
    assert api.calls == []


def test_nothing_due_no_freeze_no_hook(tmp_path: Path) -> None:
    api = FakeApi()
    log = tmp_path / "log"
    hook = write_hook(tmp_path, "pre_vm", log, 0)
    batch = plans("scsi0")
    batch[0]["new_snapshots"] = []
    snapshot_guest(GUEST, batch, lambda p: None, api, {"pre_vm": hook}, 5, True, 5)
    assert api.calls == [] and not log.exists()


# -- hooks --------------------------------------------------------------------------------------


def write_hook(tmp_path: Path, name: str, log: Path, status: int, sleep: float = 0) -> str:
    path = tmp_path / name
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s|%s|%s\\n" "$1" "$2" "$3" >> {log}\n'
        f"sleep {sleep}\n"
        f"echo 'hook says {name}'\n"
        f"exit {status}\n"
    )
    path.chmod(0o755)
    return str(path)


def test_hooks_order_and_arguments(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hooks = {kind: write_hook(tmp_path, kind, log, 0) for kind in ("pre_vm", "pre_disk", "post_disk", "post_vm")}
    api = FakeApi()
    snapshot_guest(dict(GUEST, name="web 1; $(x)"), plans("scsi0", "scsi1"), lambda p: None, api, hooks, 5, True, 5)
    assert log.read_text().splitlines() == [
        "pre_vm|web 1; $(x)|",
        "pre_disk|web 1; $(x)|scsi0",
        "pre_disk|web 1; $(x)|scsi1",
        "post_disk|web 1; $(x)|scsi0",
        "post_disk|web 1; $(x)|scsi1",
        "post_vm|web 1; $(x)|",
    ]


def test_failing_pre_vm_cancels_guest(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hooks = {"pre_vm": write_hook(tmp_path, "pre_vm", log, 3), "post_vm": write_hook(tmp_path, "post_vm", log, 0)}
    api = FakeApi()
    made: list[str] = []
    batch = plans("scsi0")
    warnings, _calls = snapshot_guest(GUEST, batch, lambda p: made.append(p["disk"]), api, hooks, 5, True, 5)
    assert made == [] and api.calls == []
    assert batch[0]["new_snapshots"] == [] and batch[0]["transfers"] == [] and batch[0]["ok"] is True
    assert any("exit status 3" in w and "hook says pre_vm" in w for w in warnings)
    assert "post_vm" not in log.read_text()


def test_failing_pre_disk_cancels_that_disk(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hook = tmp_path / "pre_disk"
    hook.write_text('#!/bin/sh\n[ "$3" = scsi1 ] && { echo busy; exit 1; }\nexit 0\n')
    hook.chmod(0o755)
    post = write_hook(tmp_path, "post_disk", log, 0)
    made: list[str] = []
    batch = plans("scsi0", "scsi1")
    warnings, _calls = snapshot_guest(
        GUEST,
        batch,
        lambda p: made.append(p["disk"]),
        FakeApi(),
        {"pre_disk": str(hook), "post_disk": post},
        5,
        True,
        5,
    )
    assert made == ["scsi0"]
    assert "pre_disk" in batch[1]["note"]
    assert any("scsi1" in w and "busy" in w for w in warnings)
    assert log.read_text().splitlines() == ["post_disk|web1|scsi0"]


def test_hook_timeout(tmp_path: Path) -> None:
    hook = write_hook(tmp_path, "slow", tmp_path / "log", 0, sleep=5)
    started = time.monotonic()
    result = run_hook(hook, "pre_vm", "g", "", 0.3)
    assert not result.ok and "timed out after 0.3 s" in result.output
    assert time.monotonic() - started < 3


def test_hook_missing() -> None:
    result = run_hook("/nonexistent/hook", "pre_vm", "g", "", 1)
    assert not result.ok and "cannot run" in result.output


# -- profiles_api -------------------------------------------------------------------------------


@pytest.fixture
def profiles_server() -> Iterator[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    received: list[dict[str, Any]] = []
    behaviour: dict[str, Any] = {"status": 200, "body": b"{}", "delay": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"type": self.headers["Content-Type"], "body": json.loads(self.rfile.read(length))})
            time.sleep(behaviour["delay"])
            self.send_response(behaviour["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(behaviour["body"])

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/profiles", received, behaviour
    server.shutdown()
    server.server_close()


def test_profiles_api_extra_profiles(profiles_server: Any) -> None:
    url, received, behaviour = profiles_server
    behaviour["body"] = json.dumps({"hourly": {"count": 24}}).encode()
    answer, why = fetch_profiles(url, {"vmid": 100, "name": "web1"}, 5)
    assert why is None and answer == {"hourly": {"count": 24}}
    assert received == [{"type": "application/json", "body": {"vmid": 100, "name": "web1"}}]


def test_profiles_api_backup_false(profiles_server: Any) -> None:
    url, _received, behaviour = profiles_server
    behaviour["body"] = b'{"backup": false}'
    assert fetch_profiles(url, {}, 5) == ({"backup": False}, None)


@pytest.mark.parametrize(
    ("status", "body", "delay", "expected"),
    [
        (500, b"{}", 0, "HTTP 500"),
        (200, b"not json", 0, "not JSON"),
        (200, b"[1, 2]", 0, "not a JSON object"),
        (200, b'{"backup": "no"}', 0, "true or false"),
        (200, b'{"hourly": 24}', 0, "profile definitions"),
        (200, b"{}", 2, "timed out"),
    ],
)
def test_profiles_api_failures_fall_back(
    profiles_server: Any, status: int, body: bytes, delay: float, expected: str
) -> None:
    url, _received, behaviour = profiles_server
    behaviour.update(status=status, body=body, delay=delay)
    answer, why = fetch_profiles(url, {}, 0.5)
    assert answer is None
    assert why is not None and expected in why and "defaults apply" in why


def test_profiles_api_unreachable() -> None:
    answer, why = fetch_profiles("http://127.0.0.1:9/nothing", {}, 1)
    assert answer is None and why is not None and "defaults apply" in why


# -- auth ---------------------------------------------------------------------------------------


def test_auth_checks_and_scrubs() -> None:
    auth = PveAuth(api_host="h", api_user="u@pve", api_password="s3cr3t-pw")
    auth.check()
    assert auth.scrub("bad password s3cr3t-pw for u@pve") == "bad password ******** for u@pve"
    assert "u@pve" in auth.label and "s3cr3t" not in auth.label
    with pytest.raises(PveError, match="go together"):
        PveAuth(api_host="h", api_user="u", api_token_id="t").check()
    with pytest.raises(PveError, match="api_password"):
        PveAuth(api_host="h", api_user="u").check()
    token = PveAuth(api_host="h", api_user="u@pve", api_token_id="bk", api_token_secret="uuid-secret")
    assert "u@pve!bk" in token.label and "uuid-secret" not in token.label
