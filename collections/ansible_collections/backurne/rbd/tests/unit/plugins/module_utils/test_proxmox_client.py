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

from ansible_collections.backurne.rbd.plugins.module_utils.pve_client import (
    PveAuth,
    PveError,
    fetch_profiles,
    frozen,
    run_hook,
    snapshot_guest,
)


class FakeApi:
    """Records agent calls; ``fail`` maps a command to an exception, ``hang`` to a delay."""

    def __init__(self, fail: dict[str, Exception] | None = None, hang: dict[str, float] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or {}
        self.hang = hang or {}
        self.state = "thawed"

    def get(self, path: str, **params: Any) -> Any:
        raise AssertionError(f"unexpected GET {path}")

    def post(self, path: str, **params: Any) -> Any:
        command = path.rsplit("/", 1)[-1]
        self.calls.append(command)
        if command in self.hang:
            time.sleep(self.hang[command])
        if command in self.fail:
            raise self.fail[command]
        self.state = {"fsfreeze-freeze": "frozen", "fsfreeze-thaw": "thawed"}.get(command, self.state)
        return {"result": 2}


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
    warnings, calls = snapshot_guest(GUEST, plans("scsi0", "scsi1", "efidisk0"), create, api, {}, 5, True, 5)
    assert made == ["scsi0", "scsi1", "efidisk0"]
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw"]
    assert calls == api.calls and warnings == []
    assert api.state == "thawed"


def test_thaw_when_a_snapshot_fails_halfway() -> None:
    api = FakeApi()
    made, create = recorder(api, fail_on="scsi1")
    batch = plans("scsi0", "scsi1", "scsi2")
    snapshot_guest(GUEST, batch, create, api, {}, 5, True, 5)
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw"]
    assert made == ["scsi0", "scsi2"]  # the others go on
    assert batch[1]["ok"] is False and "No space left" in batch[1]["error"]
    assert batch[1]["transfers"] == []


def test_thaw_when_the_block_raises() -> None:
    api = FakeApi()
    with pytest.raises(KeyboardInterrupt), frozen(api, "pve1", 100, "guest 100", 5):
        raise KeyboardInterrupt
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw"]


def test_agent_not_answering_gives_crash_consistent_snapshot() -> None:
    api = FakeApi(fail={"fsfreeze-freeze": PveError("500 QEMU guest agent is not running")})
    made, create = recorder(api)
    warnings, _calls = snapshot_guest(GUEST, plans("scsi0"), create, api, {}, 5, True, 5)
    assert made == ["scsi0"]  # not skipped
    assert any("crash-consistent" in w and "not running" in w for w in warnings)
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw"]  # balanced


def test_freeze_timeout_still_thaws() -> None:
    api = FakeApi(hang={"fsfreeze-freeze": 1.0})
    made, create = recorder(api)
    started = time.monotonic()
    warnings, _calls = snapshot_guest(GUEST, plans("scsi0"), create, api, {}, 5, True, 0.2)
    assert time.monotonic() - started < 0.9  # did not wait for the hung call
    assert made == ["scsi0"]
    assert any("no answer after 0.2 s" in w for w in warnings)
    assert api.calls[-1] == "fsfreeze-thaw"


def test_thaw_failure_is_retried_and_reported() -> None:
    api = FakeApi(fail={"fsfreeze-thaw": PveError("500 timeout")})
    with frozen(api, "pve1", 100, "guest 100", 5, thaw_attempts=2) as state:
        pass
    assert api.calls == ["fsfreeze-freeze", "fsfreeze-thaw", "fsfreeze-thaw"]
    assert any("fsfreeze-thaw failed 2 times" in w for w in state.warnings)


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
