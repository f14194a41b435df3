"""Proxmox VE guest-agent faults, end to end: backup.yml against a private stand-in API told to
fail (tests/pveapi/server.py, ``Faults``) and the real lab.

Two running qemu guests with the agent on, handled one after the other (workers 1): db1 (vmid
100) first, then web1 (vmid 101), the one the faults hit. Each test asserts the exit code, the JSON
report's records, the guests' final freeze state in the stand-in and, where the backup is
expected to work, that the backups exist and equal live by checksum. The order of the agent
calls comes from the stand-in's event log (arrival and completion of every request).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import POOL, Lab
from playbook_helpers import REPO, T0, PlaybookRun, make_inventory, run_backup, run_playbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pveapi"))
from server import RunningServer, start_server

T_PVE_SNAPSHOT = "Snapshot the guests' due disks, per live Ceph endpoint"
T_CHECK = "Check the guests' disks, per live Ceph endpoint"
PROFILES = {"daily": {"count": 7}}
FREEZE_TIMEOUT = 2


@dataclass
class Guest:
    vmid: int
    name: str
    uuid: str
    image: str
    mib: int

    @property
    def backup_image(self) -> str:
        return f"{self.uuid};scsi0;{self.name}"


def pve_fixture(ns_vm: str, guests: list[Guest]) -> dict[str, Any]:
    return {
        "cluster": {"name": "lab-pve"},
        "nodes": [{"node": "pve1", "status": "online"}],
        "storages": [{"storage": "ceph-vm", "type": "rbd", "pool": POOL, "namespace": ns_vm, "content": "images"}],
        "guests": [
            {
                "vmid": g.vmid,
                "type": "qemu",
                "node": "pve1",
                "status": "running",
                "agent": {"running": True, "filesystems": 2},
                "config": {
                    "name": g.name,
                    "agent": "1",
                    "smbios1": f"uuid={g.uuid}",
                    "scsi0": f"ceph-vm:{g.image},size={g.mib}M",
                },
            }
            for g in guests
        ],
    }


@dataclass
class FaultLab:
    lab: Lab
    ns: str
    ns_vm: str
    server: RunningServer
    name: str
    web: Guest
    db: Guest
    workdir: Path

    def inventory(self, **proxmox: Any) -> dict[str, Any]:
        inv = make_inventory(self.lab, self.ns, profiles=PROFILES)
        creds = self.server.credentials
        children = inv["all"]["children"]
        ceph = dict(children["live_clusters"]["hosts"]["lab-live"]["backurne_live"]["ceph"])
        settings = {
            "api_host": self.server.host,
            "api_port": self.server.port,
            "api_user": creds.user,
            "api_password": creds.password,
            "ca_path": str(self.server.ca_path),
            "freeze_timeout": FREEZE_TIMEOUT,
            **proxmox,
        }
        children["live_clusters"]["hosts"] = {
            "lab-pve": {
                "ansible_host": self.lab.live_ip,
                "backurne_live": {
                    "name": self.name,
                    "type": "proxmox",
                    "workers": 1,
                    "ceph": ceph,
                    "proxmox": settings,
                    "ceph_endpoint": {"default": {"ceph-vm": "lab-pve"}},
                },
            }
        }
        return inv

    def backup(self, inv: dict[str, Any], **kwargs: Any) -> tuple[PlaybookRun, dict[str, dict[str, Any]]]:
        """backup.yml; its result and the JSON report's records by backup image."""
        report = self.workdir / f"report-{uuid.uuid4().hex[:6]}.json"
        os.environ["BACKURNE_REPORT_JSON"] = str(report)
        try:
            run = run_backup(inv, self.workdir, **kwargs)
        finally:
            del os.environ["BACKURNE_REPORT_JSON"]
        assert report.exists(), run.describe()
        records = {rec["backup_image"]: rec for rec in json.loads(report.read_text())["images"]}
        return run, records

    def check(self, inv: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str]:
        """check.yml: (Nagios status, findings, line)."""
        out = self.workdir / f"check-{uuid.uuid4().hex[:6]}.txt"
        run = run_playbook(REPO / "playbooks" / "check.yml", inv, self.workdir, {"backurne_check_output": str(out)})
        assert out.exists(), run.describe()
        status, line = out.read_text().splitlines()
        findings = [f for result in run.results(T_CHECK) for item in result["results"] for f in item["findings"]]
        return int(status), findings, line

    def snapshots(self, cluster: str, spec: str) -> list[str]:
        return [s["name"] for s in self.lab.rbd_json(cluster, "snap", "ls", spec, admin=True)]

    def assert_backed_up(self, guest: Guest, count: int = 1) -> None:
        """``count`` backup snapshots, the newest equal to live by checksum."""
        backup = self.snapshots("backup", f"{POOL}/{self.ns}/{guest.backup_image}")
        assert len(backup) == count, backup
        newest = backup[-1]
        live = self.lab.checksum("live", f"{POOL}/{self.ns_vm}/{guest.image}@{newest}", admin=True)
        assert live == self.lab.checksum("backup", f"{POOL}/{self.ns}/{guest.backup_image}@{newest}", admin=True)

    def agent_calls(self, vmid: int) -> list[dict[str, Any]]:
        """The guest's agent requests: command, arrival and completion sequence numbers, status."""
        calls: dict[int, dict[str, Any]] = {}
        for event in self.server.events():
            if event["event"] == "arrive" and event.get("vmid") == vmid:
                calls[event["request"]] = {"command": event["command"], "arrive": event["seq"]}
            elif event["event"] == "complete" and event["request"] in calls:
                calls[event["request"]].update(complete=event["seq"], status=event["status"])
        return sorted(calls.values(), key=lambda call: call["arrive"])

    def results(self, vmid: int) -> list[dict[str, Any]]:
        """The stand-in's record of the guest's agent calls (in completion order, with results)."""
        return [entry for entry in self.server.records() if entry["vmid"] == vmid]


def warnings_of(run: PlaybookRun) -> str:
    found: list[str] = []
    for result in run.results(T_PVE_SNAPSHOT):
        found.extend(result.get("warnings", []))
        for item in result.get("results", []):
            found.extend(item.get("warnings", []))
    return " ".join(found)


@pytest.fixture
def fl(lab: Lab, ns: str, tmp_path: Path) -> Iterator[FaultLab]:
    ns_vm = f"{ns}-vm{uuid.uuid4().hex[:6]}"
    # Fresh smbios uuids: the history database of the lab's state dir is keyed by backup image.
    db = Guest(100, "db1", str(uuid.uuid4()), "vm-100-disk-0", 2)
    web = Guest(101, "web1", str(uuid.uuid4()), "vm-101-disk-0", 4)
    server = None
    lab.rbd("live", "namespace", "create", f"{POOL}/{ns_vm}", admin=True)
    try:
        for seed, guest in enumerate((db, web)):
            lab.write_image("live", f"{POOL}/{ns_vm}/{guest.image}", guest.mib, seed=300 + seed, admin=True)
        server = start_server(pve_fixture(ns_vm, [db, web]), host=lab.live_ip, workdir=tmp_path / "pveapi")
        yield FaultLab(lab, ns, ns_vm, server, f"pve{uuid.uuid4().hex[:6]}", web, db, tmp_path)
    finally:
        if server is not None:
            server.stop()
        lab.purge_namespace("live", ns_vm)


def assert_thawed_and_ok(fl: FaultLab, run: PlaybookRun, records: dict[str, dict[str, Any]]) -> None:
    assert run.rc == 0, f"{run.failure_text()}\n{run.describe()}"
    for guest in (fl.web, fl.db):
        assert not fl.server.frozen(guest.vmid)
        record = records[guest.backup_image]
        assert record["status"] == "transferred" and record["may_be_frozen"] is False, record
        fl.assert_backed_up(guest)


def test_api_killed_right_after_the_freeze_and_back_within_the_thaw_timeout(fl: FaultLab) -> None:
    fl.server.inject({"outage": {"after": "fsfreeze-freeze", "vmid": 101, "seconds": 4}})
    run, records = fl.backup(fl.inventory(thaw_timeout=60), now=T0)
    assert_thawed_and_ok(fl, run, records)
    calls = fl.agent_calls(101)
    freeze = calls[0]
    assert freeze["command"] == "fsfreeze-freeze" and freeze["status"] == 200
    # Thaws were dropped or refused during the outage, then one got through, confirmed by the status.
    assert any(c["command"] == "fsfreeze-thaw" and c["status"] == 0 for c in calls) or any(
        e["event"] == "refused" for e in fl.server.events()
    )
    thawed = [c for c in calls if c["command"] == "fsfreeze-thaw" and c["status"] == 200]
    confirmed = [r for r in fl.results(101) if r["command"] == "fsfreeze-status" and r.get("result") == "thawed"]
    assert thawed and thawed[0]["complete"] > freeze["complete"] and confirmed


def test_api_gone_for_good_fails_the_run_naming_the_guest_then_converges(fl: FaultLab) -> None:
    fl.server.inject({"outage": {"after": "fsfreeze-freeze", "vmid": 101, "seconds": None}})
    inv = fl.inventory(thaw_timeout=4)
    run, records = fl.backup(inv)  # the real clock: the check below judges these backups
    assert run.rc != 0
    failure = run.failure_text()
    assert "guest 101 (web1) on node pve1 may be frozen" in failure, run.describe()
    assert "db1" not in failure
    assert fl.server.frozen(101) and not fl.server.frozen(100)
    web, db = records[fl.web.backup_image], records[fl.db.backup_image]
    assert web["may_be_frozen"] is True and "may be frozen" in web["note"]
    assert db["may_be_frozen"] is False
    fl.assert_backed_up(fl.web)  # the snapshot was taken frozen and sent: the backup itself is good
    fl.assert_backed_up(fl.db)

    # The API is back (the guest still frozen): the check reads the history and says so.
    fl.server.inject({})
    assert fl.server.frozen(101)
    status, findings, line = fl.check(inv)
    assert status == 2, line
    frozen = [f for f in findings if f["code"] == "may-be-frozen"]
    assert [f["image"] for f in frozen] == [fl.web.image], findings
    assert "guest 101 (web1) may be frozen" in frozen[0]["message"]

    # Nothing is due (same day), yet the next backup run thaws web1, confirms it and clears it.
    run, records = fl.backup(inv)
    assert run.rc == 0, f"{run.failure_text()}\n{run.describe()}"
    assert not fl.server.frozen(101)
    assert records[fl.web.backup_image]["may_be_frozen"] is False
    fl.assert_backed_up(fl.web)  # still one snapshot: nothing was due
    status, findings, line = fl.check(inv)
    assert not [f for f in findings if f["code"] == "may-be-frozen"], findings
    assert status == 0, line


def test_freeze_answering_500_although_the_guest_froze(fl: FaultLab) -> None:
    fl.server.inject({"fail": [{"vmid": 101, "command": "fsfreeze-freeze", "times": 1, "effect": True}]})
    run, records = fl.backup(fl.inventory(), now=T0)
    assert_thawed_and_ok(fl, run, records)
    assert "fsfreeze-freeze failed" in warnings_of(run) and "web1" in warnings_of(run)
    done = [(r["command"], r["status"], r.get("result")) for r in fl.results(101)]
    assert done[0] == ("fsfreeze-freeze", 500, None)
    assert ("fsfreeze-thaw", 200, 2) in done  # the thaw found it frozen, and thawed it
    assert done[-1] == ("fsfreeze-status", 200, "thawed")


@pytest.mark.parametrize("mode", ["serial", "concurrent"])
def test_freeze_slower_than_freeze_timeout(fl: FaultLab, mode: str) -> None:
    fl.server.inject(
        {
            "agent_mode": {"101": mode},
            "slow": [{"vmid": 101, "command": "fsfreeze-freeze", "seconds": FREEZE_TIMEOUT + 3}],
        }
    )
    run, records = fl.backup(fl.inventory(), now=T0)
    assert_thawed_and_ok(fl, run, records)
    assert "no answer after 2 s" in warnings_of(run)
    calls = fl.agent_calls(101)
    freeze = calls[0]
    assert freeze["command"] == "fsfreeze-freeze" and freeze["status"] == 200
    thaws = [c for c in calls if c["command"] == "fsfreeze-thaw"]
    thawing = [r for r in fl.results(101) if r["command"] == "fsfreeze-thaw" and r.get("result") == 2]
    assert len(thawing) == 1  # exactly one thaw found the guest frozen
    if mode == "serial":
        # qemu-ga queues: every thaw completed after the slow freeze did (in the agent's own
        # finishing order: the request log's "complete" events race once the queue is released).
        finished = {r["command"]: [] for r in fl.results(101)}
        for r in fl.results(101):
            finished[r["command"]].append(r.get("agent_done"))
        (freeze_done,) = finished["fsfreeze-freeze"]
        assert freeze_done is not None and len(finished["fsfreeze-thaw"]) == len(thaws)
        assert all(done is not None and done > freeze_done for done in finished["fsfreeze-thaw"])
    else:
        # The first thaw overtook the freeze (thawing nothing); a later one undid the late freeze.
        assert thaws[0]["complete"] < freeze["complete"]
        assert any(t["arrive"] > freeze["complete"] for t in thaws)
    last_status = [c for c in calls if c["command"] == "fsfreeze-status"][-1]
    assert last_status["arrive"] > freeze["complete"]  # confirmed only once the freeze had answered


def test_thaw_failing_three_times_then_ok(fl: FaultLab) -> None:
    fl.server.inject(
        {
            "fail": [
                {"vmid": 101, "command": "fsfreeze-thaw", "times": 1, "delay": FREEZE_TIMEOUT + 1},  # a timeout
                {"vmid": 101, "command": "fsfreeze-thaw", "times": 2},  # then 500 twice
            ]
        }
    )
    run, records = fl.backup(fl.inventory(), now=T0)
    assert_thawed_and_ok(fl, run, records)
    thaws = [(r["status"], r.get("result")) for r in fl.results(101) if r["command"] == "fsfreeze-thaw"]
    assert thaws[:3] == [(500, None)] * 3 and (200, 2) in thaws[3:]


def test_403_on_the_agent_fails_loudly_by_default_then_crash_consistent_when_asked(fl: FaultLab) -> None:
    fl.server.inject({"deny_agent": [101]})
    inv = fl.inventory()
    run, records = fl.backup(inv, now=T0)
    assert run.rc != 0
    failure = run.failure_text()
    assert "guest 101 (web1)" in failure and "VM.GuestAgent.FileSystemMgmt" in failure, run.describe()
    assert "Permission check failed" in failure
    web = records[fl.web.backup_image]
    assert web["status"] == "failed" and web["may_be_frozen"] is False
    assert fl.snapshots("live", f"{POOL}/{fl.ns_vm}/{fl.web.image}") == []  # nothing snapshotted
    assert [r["command"] for r in fl.results(101)] == ["fsfreeze-freeze"]  # denied, nothing to thaw
    assert not fl.server.frozen(101)
    fl.assert_backed_up(fl.db)  # the other guest went on
    assert records[fl.db.backup_image]["status"] == "transferred"

    # The operator accepts crash-consistent backups for such guests (playbook variable).
    accept = {"backurne_pve_on_freeze_denied": "crash_consistent"}
    run, records = fl.backup(inv, now=T0 + timedelta(hours=1), extra_vars=accept)
    assert run.rc == 0, f"{run.failure_text()}\n{run.describe()}"
    assert "refused" in warnings_of(run) and "crash-consistent" in warnings_of(run)
    assert records[fl.web.backup_image]["status"] == "transferred"
    fl.assert_backed_up(fl.web)
    assert not fl.server.frozen(101)


def test_stand_in_faults_file_is_read_per_request(tmp_path: Path) -> None:
    """The lab instance's form (--faults FILE): re-read when it changes, absent means none."""
    faults = tmp_path / "faults.json"
    guest = Guest(101, "web1", str(uuid.uuid4()), "vm-101-disk-0", 4)
    with start_server(pve_fixture("unused", [guest]), workdir=tmp_path / "pveapi") as srv:
        srv.state.faults.path = faults
        creds = srv.credentials
        headers = {"Authorization": f"PVEAPIToken={creds.full_token_id}={creds.token_secret}"}

        def post(command: str) -> tuple[int, str]:
            url = f"{srv.api_url}/nodes/pve1/qemu/101/agent/{command}"
            answer = requests.post(url, headers=headers, verify=str(srv.ca_path), timeout=30)
            return answer.status_code, answer.reason

        assert post("fsfreeze-status") == (200, "OK")
        faults.write_text(json.dumps({"deny_agent": True}))
        assert post("fsfreeze-freeze") == (
            403,
            "Permission check failed (/vms/101, VM.GuestAgent.FileSystemMgmt|VM.GuestAgent.Unrestricted)",
        )
        faults.write_text(json.dumps({"fail": [{"command": "fsfreeze-freeze", "times": 1, "effect": True}]}))
        assert post("fsfreeze-freeze") == (500, "VM 101 qmp command 'guest-fsfreeze-freeze' failed - got timeout")
        assert srv.frozen(101)
        faults.unlink()
        assert post("fsfreeze-thaw") == (200, "OK") and not srv.frozen(101)
        arrivals = [e["command"] for e in srv.events() if e["event"] == "arrive"]
        assert arrivals == ["fsfreeze-status", "fsfreeze-freeze", "fsfreeze-freeze", "fsfreeze-thaw"]
