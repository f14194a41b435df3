# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox import guest_restore
from ansible_collections.backurne.rbd.plugins.modules import proxmox_restore

UUID = "7b10d7af-b932-4c66-b2c3-3996152ec465"
SNAP = "backup;daily;7;2026-11-29T10:00:00.000000"
CONFIG = {
    "name": "web1",
    "smbios1": f"uuid={UUID}",
    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
    "scsi0": "ceph-vm:vm-100-disk-0,size=4M",
    "efidisk0": "ceph-vm:vm-100-disk-1,size=1M",
    "unused0": "ceph-vm:vm-100-disk-2",
}
BASE = {"live_host": "10.0.0.1", "api_host": "pve1", "api_user": "root@pam", "api_password": "secret-pw", "pool": "b"}


class FakeApi:
    calls: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    def __init__(self, auth: Any) -> None:
        self.auth = auth

    def get(self, path: str, **params: Any) -> Any:
        if path == "storage":
            return [{"storage": "ceph-vm", "type": "rbd", "pool": "rbd", "namespace": "pve"}]
        if path == "cluster/resources":
            return [{"vmid": 100, "node": "pve1", "type": "qemu"}, {"vmid": 104, "node": "pve2", "type": "lxc"}]
        if path == "nodes/pve1/qemu/100/config":
            return dict(CONFIG)
        raise AssertionError(path)

    def post(self, path: str, **params: Any) -> Any:
        FakeApi.calls.append(("post", path, params))

    def put(self, path: str, **params: Any) -> Any:
        FakeApi.calls.append(("put", path, params))


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"meta": {}, "pool": ["vm-100-disk-3"]}
    FakeApi.calls = []

    def run(self: RbdRunner, args: list[str], **kwargs: Any) -> str:
        assert args[:2] == ["image-meta", "list"], args
        image = next(a.split("=", 1)[1] for a in args if a.startswith("--image="))
        if image not in state["meta"]:
            raise RbdError(["rbd"], 2, "rbd: error opening image: (2) No such file or directory", "local")
        return json.dumps(state["meta"][image])

    def plan(backup, live, request, prefix, now=None):
        target = f"{request.target_pool}/{request.target_namespace}/{request.target_image}"
        return SimpleNamespace(snapshot=SNAP, target=target)

    monkeypatch.setattr(RbdRunner, "run", run)
    monkeypatch.setattr(RbdRunner, "list_images", lambda self, pool, ns=None: {n: [] for n in state["pool"]})
    monkeypatch.setattr(guest_restore, "ProxmoxerApi", FakeApi)
    monkeypatch.setattr(guest_restore, "plan_restore", plan)
    monkeypatch.setattr(proxmox_restore, "PROXMOXER_IMPORT_ERROR", None)
    for disk in ("scsi0", "efidisk0"):
        state["meta"][f"{UUID};{disk};web1"] = {
            "backurne.pve.config": json.dumps(CONFIG),
            "backurne.pve.disk": disk,
            "backurne.pve.vmid": "100",
            "backurne.pve.type": "qemu",
            "backurne.pve.cluster": "pve",
        }
    state["meta"]["plain;disk;None"] = {}
    return state


def test_disk_mode_check_plans_names_and_unused_keys(run_module, fakes) -> None:
    images = [f"{UUID};scsi0;web1", f"{UUID};efidisk0;web1"]
    result = run_module(proxmox_restore.main, {**BASE, "images": images, "_ansible_check_mode": True})
    assert result["changed"] is True and (result["vmid"], result["node"]) == (100, "pve1")
    # 0, 1, 2 in the config, 3 an image of the pool: 4 and 5; unused0 taken: unused1, unused2
    assert [(d["key"], d["volume"]) for d in result["disks"]] == [
        ("unused1", "ceph-vm:vm-100-disk-4"),
        ("unused2", "ceph-vm:vm-100-disk-5"),
    ]
    assert result["disks"][0]["target"] == "rbd/pve/vm-100-disk-4" and result["disks"][0]["snapshot"] == SNAP
    assert FakeApi.calls == []  # check mode: no config change
    assert "secret-pw" not in json.dumps(result)


def test_guest_mode_check_returns_the_new_config(run_module, fakes) -> None:
    images = [f"{UUID};scsi0;web1"]
    args = {**BASE, "images": images, "mode": "guest", "new_vmid": 250, "node": "pve1", "_ansible_check_mode": True}
    result = run_module(proxmox_restore.main, args)
    conf = result["config"]
    assert conf["scsi0"] == "ceph-vm:vm-250-disk-0,size=4M" and "efidisk0" not in conf and "unused0" not in conf
    assert UUID not in conf["smbios1"] and conf["net0"] == "virtio,bridge=vmbr0"
    assert any(w.startswith("efidisk0") for w in result["warnings_list"])
    assert FakeApi.calls == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"mode": "guest", "new_vmid": 104, "node": "pve1"}, "new_vmid: CT 104 already exists on node 'pve2'"),
        ({"mode": "guest", "node": "pve1"}, "missing: new_vmid"),
        ({"vmid": 999}, "guest 999 does not exist"),
        ({"storage": "local-lvm"}, "storage 'local-lvm' is not an RBD storage"),
        ({"images": ["plain;disk;None"]}, "has no saved Proxmox VE config"),
        ({"images": ["nope;x;y"]}, "b/nope;x;y does not exist"),
        ({"images": [f"{UUID};scsi0;web1", f"{UUID};scsi0;web1"]}, "without duplicates"),
    ],
)
def test_bad_requests_fail_naming_the_culprit_and_change_nothing(run_module, fakes, extra, message) -> None:
    args = {**BASE, "images": [f"{UUID};scsi0;web1"], **extra}
    result = run_module(proxmox_restore.main, args)
    assert result.get("failed") and message in result["msg"], result["msg"]
    assert not result.get("changed") and FakeApi.calls == []
