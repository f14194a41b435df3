# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.policy.run_config import ConfigError, validate_live_cluster
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox import discover_job, snapshot_job
from ansible_collections.backurne.rbd.plugins.modules import (
    info,
    proxmox_backup_images,
    proxmox_discover,
    proxmox_snapshot,
    retention,
)

D1 = "backup;daily;2;2026-11-01T00:00:00.000000"
D2 = "backup;daily;2;2026-11-02T00:00:00.000000"
D3 = "backup;daily;2;2026-11-03T00:00:00.000000"
UUID = "7b10d7af-b932-4c66-b2c3-3996152ec465"
REPO = Path(__file__).resolve().parents[8]


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Images per 'pool/namespace'; snapshot creation fails for images named in 'fail'."""
    state: dict[str, Any] = {"pools": {}, "removed": [], "created": [], "fail": set()}

    def key(pool: str, namespace: str | None) -> str:
        return pool + (f"/{namespace}" if namespace else "")

    def list_images(self: RbdRunner, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        return {n: list(s) for n, s in state["pools"].get(key(pool, namespace), {}).items()}

    def snap_remove(self: RbdRunner, spec: Any) -> None:
        state["pools"][key(spec.pool, spec.namespace)][spec.image].remove(spec.snap)
        state["removed"].append(f"{key(spec.pool, spec.namespace)}/{spec.image}@{spec.snap}")

    def snap_create(self: RbdRunner, spec: Any) -> None:
        if spec.image in state["fail"]:
            raise RbdError(["rbd"], 122, "rbd: failed to create snapshot: (122) Disk quota exceeded", "local")
        state["pools"][key(spec.pool, spec.namespace)][spec.image].append(spec.snap)
        state["created"].append(f"{key(spec.pool, spec.namespace)}/{spec.image}@{spec.snap}")

    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(RbdRunner, "snap_remove", snap_remove)
    monkeypatch.setattr(RbdRunner, "snap_create", snap_create)
    return state


# -- retention with image_map -----------------------------------------------------------------


def test_retention_live_only_mapped_images(run_module, pools) -> None:
    pools["pools"]["rbd/pve"] = {"vm-100-disk-0": [D1, D2, D3], "not-a-guest-disk": [D1, D2, D3]}
    backup_name = f"{UUID};scsi0;web1"
    result = run_module(
        retention.main,
        {
            "side": "live",
            "live_cluster": "pve-a",
            "pool": "rbd",
            "namespace": "pve",
            "profiles": {"daily": {"count": 2}},
            "other_snapshots": {backup_name: [D1, D2]},
            "image_map": {"vm-100-disk-0": backup_name},
        },
    )
    assert pools["removed"] == [f"rbd/pve/vm-100-disk-0@{D1}"]  # base D2 kept, D3 newer
    assert result["changed"] is True


def test_retention_backup_side_by_map(run_module, pools) -> None:
    kept, gone, foreign = f"{UUID};scsi0;web1", "ceph-ct;vm-104-disk-0;ct1", "pve-a;x;None"
    pools["pools"]["rbd"] = {kept: [D1, D2], gone: [D1, D2], foreign: [D1, D2]}
    run_module(
        retention.main,
        {
            "side": "backup",
            "live_cluster": "pve-a",
            "pool": "rbd",
            "profiles": {"daily": {"count": 2, "interval": "1d"}},
            "now": "2026-11-10T00:00:00",
            "other_snapshots": {kept: [D2]},
            "image_map": {kept: kept, gone: None},
        },
    )
    # kept: source exists, D2 shared -> D1 expired; gone: source gone, faded out;
    # pve-a;x;None has the cluster's name but is not in the map: untouched.
    assert f"rbd/{kept}@{D1}" in pools["removed"]
    assert f"rbd/{gone}@{D1}" in pools["removed"]
    assert not any(foreign in item for item in pools["removed"])


# -- proxmox_snapshot ---------------------------------------------------------------------------


class FakeApi:
    """The API with guest agents; a guest in ``stuck`` never thaws."""

    calls: ClassVar[list[str]] = []
    stuck: ClassVar[set[int]] = set()

    def __init__(self, auth: Any) -> None:
        assert auth.api_password == "pw"

    def get(self, path: str, **params: Any) -> Any:
        raise AssertionError(path)

    def post(self, path: str, **params: Any) -> Any:
        FakeApi.calls.append(path)
        if path.endswith("/fsfreeze-status"):
            vmid = int(path.split("/qemu/")[1].split("/")[0])
            return {"result": "frozen" if vmid in FakeApi.stuck else "thawed"}
        return {"result": 1}


def disk(vmid: int, key: str, image: str, namespace: str, freeze: bool = True) -> dict[str, Any]:
    return {
        "endpoint": "node-a",
        "storage": "ceph-vm",
        "pool": "rbd",
        "namespace": namespace,
        "image": image,
        "disk": key,
        "backup_image": f"{UUID};{key};web{vmid}",
        "guest": {
            "vmid": vmid,
            "name": f"web{vmid}",
            "node": "pve1",
            "type": "qemu",
            "running": True,
            "freeze": freeze,
        },
        "profiles": {"daily": {"count": 7}},
        "config": {"name": f"web{vmid}"},
    }


def snapshot_args(disks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    base = {
        "live_cluster": "pve-a",
        "disks": disks,
        "now": "2026-11-04T12:00:00",
        "api_host": "pve.example",
        "api_user": "root@pam",
        "api_password": "pw",
        "fail_on_error": False,
    }
    base.update(extra)
    return base


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeApi]:
    monkeypatch.setenv("BACKURNE_STATE_DIR", str(tmp_path / "state"))
    FakeApi.calls = []
    FakeApi.stuck = set()
    monkeypatch.setattr(snapshot_job, "ProxmoxerApi", FakeApi)
    monkeypatch.setattr(snapshot_job, "PROXMOXER_IMPORT_ERROR", None)
    return FakeApi


def test_proxmox_snapshot_plans_in_snapshot_shape(run_module, pools, fake_api) -> None:
    pools["pools"]["rbd/a"] = {"vm-100-disk-0": [], "vm-100-disk-1": []}
    pools["pools"]["rbd/b"] = {"vm-101-disk-0": []}
    disks = [
        disk(100, "efidisk0", "vm-100-disk-1", "a"),
        disk(100, "scsi0", "vm-100-disk-0", "a"),
        disk(101, "rootfs", "vm-101-disk-0", "b", freeze=False),
    ]
    result = run_module(proxmox_snapshot.main, snapshot_args(disks))
    assert result["changed"] is True and result["failed_images"] == []
    assert len(pools["created"]) == 3
    images = {i["backup_image"]: i for i in result["images"]}
    item = images[f"{UUID};scsi0;web100"]
    assert item["kind"] == "full" and item["source_pool"] == "rbd" and item["source_namespace"] == "a"
    assert item["transfers"] == [{"from_snap": None, "to_snap": item["new_snapshots"][0]}]
    assert images[f"{UUID};rootfs;web101"]["source_namespace"] == "b"
    # One freeze and one verified thaw, for the only guest with freeze on.
    assert [c.rsplit("/", 1)[-1] for c in fake_api.calls] == ["fsfreeze-freeze", "fsfreeze-thaw", "fsfreeze-status"]
    assert all("/qemu/100/" in c for c in fake_api.calls)
    assert set(result["live_snapshots"]) == set(images)
    assert item["freeze"] == {"state": "thawed", "message": None} and "freeze" not in images[f"{UUID};rootfs;web101"]
    assert result["may_be_frozen"] == []


def test_proxmox_snapshot_guest_left_frozen_fails_naming_it_after_the_others(run_module, pools, fake_api) -> None:
    pools["pools"]["rbd/a"] = {"vm-100-disk-0": [], "vm-101-disk-0": []}
    fake_api.stuck = {100}
    disks = [disk(100, "scsi0", "vm-100-disk-0", "a"), disk(101, "scsi0", "vm-101-disk-0", "a")]
    result = run_module(proxmox_snapshot.main, snapshot_args(disks, thaw_timeout=1, fail_on_error=True))
    assert len(pools["created"]) == 2  # both guests snapshotted, the batch went on
    assert [g["vmid"] for g in result["may_be_frozen"]] == [100]
    assert "guest 100 (web100) on node pve1 may be frozen" in result["msg"]
    assert result["failed_images"] == []

    # The next run, nothing due: the guest is thawed and checked anyway, and forgotten once thawed.
    pending = Path(os.environ["BACKURNE_STATE_DIR"]) / "pve-thaw-pending.json"
    assert list(json.loads(pending.read_text())["pve-a"]) == ["100"]
    fake_api.stuck, fake_api.calls = set(), []
    snaps = {snap.rsplit("@", 1)[1] for snap in pools["created"]}
    pools["pools"]["rbd/a"] = {"vm-100-disk-0": sorted(snaps), "vm-101-disk-0": sorted(snaps)}
    again = run_module(proxmox_snapshot.main, snapshot_args(disks, thaw_timeout=1, fail_on_error=True))
    assert len(pools["created"]) == 2  # nothing new was due
    assert [c.rsplit("/", 1)[-1] for c in fake_api.calls] == ["fsfreeze-thaw", "fsfreeze-status"]
    assert all("/qemu/100/" in c for c in fake_api.calls)
    assert again["may_be_frozen"] == [] and again["images"][0]["freeze"]["state"] == "thawed"
    assert "pve-a" not in json.loads(pending.read_text())


def test_proxmox_snapshot_failure_halfway_thaws_and_fails_alone(run_module, pools, fake_api) -> None:
    pools["pools"]["rbd/a"] = {"vm-100-disk-0": [], "vm-100-disk-1": []}
    pools["fail"] = {"vm-100-disk-0"}
    disks = [disk(100, "efidisk0", "vm-100-disk-1", "a"), disk(100, "scsi0", "vm-100-disk-0", "a")]
    result = run_module(proxmox_snapshot.main, snapshot_args(disks))
    assert [f["image"] for f in result["failed_images"]] == ["vm-100-disk-0"]
    assert "Disk quota exceeded" in result["failed_images"][0]["error"]
    failed = next(i for i in result["images"] if i["image"] == "vm-100-disk-0")
    assert failed["transfers"] == []
    assert [c.rsplit("/", 1)[-1] for c in fake_api.calls] == ["fsfreeze-freeze", "fsfreeze-thaw", "fsfreeze-status"]
    assert pools["created"] == [f"rbd/a/vm-100-disk-1@{result['images'][0]['new_snapshots'][0]}"]


def test_proxmox_snapshot_check_mode_touches_nothing(run_module, pools, fake_api) -> None:
    pools["pools"]["rbd/a"] = {"vm-100-disk-0": []}
    result = run_module(
        proxmox_snapshot.main, snapshot_args([disk(100, "scsi0", "vm-100-disk-0", "a")], _ansible_check_mode=True)
    )
    assert result["changed"] is True and pools["created"] == [] and fake_api.calls == []


def test_proxmox_snapshot_missing_image_fails_that_disk(run_module, pools, fake_api) -> None:
    pools["pools"]["rbd/a"] = {}
    result = run_module(proxmox_snapshot.main, snapshot_args([disk(100, "scsi0", "vm-100-disk-0", "a")]))
    assert "not found on live cluster pve-a" in result["failed_images"][0]["error"]


# -- configuration ------------------------------------------------------------------------------

PVE = {"api_host": "pve1", "api_user": "backurne@pve", "api_token_id": "bk", "api_token_secret": "s3cret"}


def test_config_accepts_proxmox_and_drops_secrets() -> None:
    spec = {"type": "proxmox", "proxmox": dict(PVE), "ceph_endpoint": {"default": {"ceph-vm": "pve1"}}}
    out = validate_live_cluster("pve1", spec)
    assert out["type"] == "proxmox" and out["ceph_endpoint"] == {"default": {"ceph-vm": "pve1"}}
    assert "api_token_secret" not in out["proxmox"] and out["proxmox"]["has_api_token_secret"] is True
    assert "s3cret" not in repr(out)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "proxmox"}, "expected a mapping"),
        ({"type": "proxmox", "proxmox": {"api_user": "u", "api_password": "p"}}, "api_host is required"),
        ({"type": "proxmox", "proxmox": {"api_host": "h", "api_user": "u"}}, "needs api_password"),
        ({"type": "proxmox", "proxmox": {"api_host": "h", "api_user": "u", "api_token_id": "t"}}, "go together"),
        ({"type": "proxmox", "proxmox": dict(PVE, bogus=1)}, "unknown key 'bogus'"),
        ({"type": "proxmox", "proxmox": dict(PVE, hooks={"pre_vm": "rel/path"})}, "absolute path"),
        ({"type": "proxmox", "proxmox": dict(PVE, hooks={"pre_x": "/a"})}, "unknown key 'pre_x'"),
        ({"type": "proxmox", "proxmox": dict(PVE, profile_catalogue={"x": {}})}, "profile_catalogue"),
        ({"type": "proxmox", "proxmox": PVE, "ceph_endpoint": {"default": "pve1"}}, "ceph_endpoint.default"),
        ({"type": "plain", "proxmox": PVE}, "only for a live cluster of type proxmox"),
        ({"type": "proxmox", "proxmox": dict(PVE, thaw_timeout=0)}, "thaw_timeout"),
        ({"type": "proxmox", "proxmox": dict(PVE, on_freeze_denied="ignore")}, "on_freeze_denied must be fail or"),
    ],
)
def test_config_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_live_cluster("pve1", spec)
    with pytest.raises(ConfigError) as caught:
        validate_live_cluster("pve1", spec)
    assert "s3cret" not in str(caught.value)


def test_example_inventory_proxmox_cluster_is_valid() -> None:
    hosts = yaml.safe_load((REPO / "inventories" / "example" / "hosts.yml").read_text())
    live = hosts["all"]["children"]["live_clusters"]["hosts"]
    out = validate_live_cluster("pve1", live["pve1"]["backurne_live"])
    assert out["type"] == "proxmox" and out["proxmox"]["has_api_token_secret"] is True
    assert out["ceph_endpoint"]["default"]["hdd-archive"] in hosts["all"]["children"]["ceph_endpoints"]["hosts"]


# -- proxmox_backup_images ---------------------------------------------------------------------


@pytest.fixture
def backup_pool(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A backup pool: images -> snapshots, and image-meta per image; run() understands
    rename, image-meta list/set (the calls the module makes; no python3-rados here: the CLI path)."""
    state: dict[str, Any] = {"images": {}, "meta": {}, "calls": []}

    def list_images(self: RbdRunner, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        return {n: list(s) for n, s in state["images"].items()}

    def run(self: RbdRunner, args: list[str], **kwargs: Any) -> str:
        state["calls"].append(args[:2])
        image = next(a.split("=", 1)[1] for a in args if a.startswith("--image="))
        if args[0] == "rename":
            dest = next(a.split("=", 1)[1] for a in args if a.startswith("--dest="))
            state["images"][dest] = state["images"].pop(image)
            state["meta"][dest] = state["meta"].pop(image, {})
            return ""
        meta = state["meta"].setdefault(image, {})
        if args[:2] == ["image-meta", "list"]:
            return json.dumps(meta) if meta else ""
        if args[:2] == ["image-meta", "set"]:
            meta[args[-2]] = args[-1]
            return ""
        raise AssertionError(args)

    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(RbdRunner, "run", run)
    return state


def pve_disk(name: str) -> dict[str, Any]:
    return {
        "backup_image": f"{UUID};scsi0;{name}",
        "disk": "scsi0",
        "guest": {"vmid": 100, "name": name, "type": "qemu"},
        "config": {"name": name, "scsi0": "ceph-vm:vm-100-disk-0,size=1G"},
    }


def test_backup_images_rename_follows_the_guest(run_module, backup_pool) -> None:
    backup_pool["images"] = {f"{UUID};scsi0;web1": [D1], "other;x;None": []}
    result = run_module(proxmox_backup_images.main, {"live_cluster": "pve-a", "disks": [pve_disk("web2")]})
    assert result["renamed"] == {f"{UUID};scsi0;web1": f"{UUID};scsi0;web2"}
    assert result["snapshots"][f"{UUID};scsi0;web2"] == [D1]
    assert set(backup_pool["images"]) == {f"{UUID};scsi0;web2", "other;x;None"}
    assert result["changed"] is True


def test_backup_images_rename_check_mode(run_module, backup_pool) -> None:
    backup_pool["images"] = {f"{UUID};scsi0;web1": [D1]}
    result = run_module(
        proxmox_backup_images.main,
        {"live_cluster": "pve-a", "disks": [pve_disk("web2")], "_ansible_check_mode": True},
    )
    assert result["changed"] is True and f"{UUID};scsi0;web2" in result["snapshots"]
    assert set(backup_pool["images"]) == {f"{UUID};scsi0;web1"}  # untouched


def test_backup_images_save_config_and_ownership(run_module, backup_pool) -> None:
    current, vanished, foreign = f"{UUID};scsi0;web1", "ceph-ct;vm-9-disk-0;old", "prod;img;None"
    backup_pool["images"] = {current: [D1], vanished: [D1], foreign: [D1]}
    backup_pool["meta"] = {vanished: {"backurne.pve.cluster": "pve-a"}, foreign: {}}
    transfers = [{"image": "vm-100-disk-0", "backup_image": current, "ok": True, "snapshots": [D1]}]
    coverage = {"complete": True, "seen": [100]}
    args = {"live_cluster": "pve-a", "disks": [pve_disk("web1")], "transfers": transfers, "coverage": coverage}
    result = run_module(proxmox_backup_images.main, args)
    meta = backup_pool["meta"][current]
    assert json.loads(meta["backurne.pve.config"])["scsi0"].startswith("ceph-vm:vm-100-disk-0")
    assert (meta["backurne.pve.vmid"], meta["backurne.pve.name"], meta["backurne.pve.cluster"]) == (
        "100",
        "web1",
        "pve-a",
    )
    assert result["meta_written"] == [current]
    assert result["owned"] == {current: current, vanished: None}
    # Unchanged config: the next run reads the metadata once and writes nothing.
    backup_pool["calls"].clear()
    run_module(proxmox_backup_images.main, args)
    assert ["image-meta", "set"] not in backup_pool["calls"]


def test_backup_images_save_current_config_and_pending_apart(run_module, backup_pool) -> None:
    name = f"{UUID};scsi0;web1"
    backup_pool["images"] = {name: [D1]}
    disk = pve_disk("web1")
    disk["config"]["memory"] = "4096"
    disk["pending"] = {"memory": {"value": "4096", "pending": "8192"}, "onboot": {"value": 1, "delete": 1}}
    transfers = [{"image": "vm-100-disk-0", "backup_image": name, "ok": True, "snapshots": [D1]}]
    args = {"live_cluster": "pve-a", "disks": [disk], "transfers": transfers, "coverage": {"complete": True}}
    run_module(proxmox_backup_images.main, args)
    meta = backup_pool["meta"][name]
    assert json.loads(meta["backurne.pve.config"])["memory"] == "4096"
    assert json.loads(meta["backurne.pve.pending"]) == disk["pending"]


def _vanished_pool(backup_pool: dict[str, Any]) -> dict[str, str]:
    """Four images of cluster pve-a no disk of the run produced, one per guest fate."""
    images = {
        "offline": "ceph-vm;vm-102-disk-0;app1",  # its node is offline
        "deleted": "ceph-vm;vm-105-disk-0;gone1",  # not listed at all
        "unselected": "ceph-vm;vm-106-disk-0;other",  # outside the run's limit
        "detached": "ceph-vm;vm-100-disk-7;web1",  # guest seen, disk no longer backed up
    }
    vmids = {"offline": "102", "deleted": "105", "unselected": "106", "detached": "100"}
    for fate, image in images.items():
        backup_pool["images"][image] = [D1]
        backup_pool["meta"][image] = {"backurne.pve.cluster": "pve-a", "backurne.pve.vmid": vmids[fate]}
        backup_pool["meta"][image]["backurne.pve.name"] = image.rsplit(";", 1)[1]
    return images


def test_backup_images_deletion_only_on_proof(run_module, backup_pool) -> None:
    images = _vanished_pool(backup_pool)
    incomplete = {
        "complete": False,
        "problems": ["node pve2 offline"],
        "seen": [100],
        "unseen": [{"vmid": 102, "name": "?", "node": "pve2", "reason": "node pve2 offline"}],
        "unselected": [106],
    }
    args = {"live_cluster": "pve-a", "disks": [pve_disk("web1")], "transfers": [], "coverage": incomplete}
    result = run_module(proxmox_backup_images.main, args)
    assert result["owned"] == {images["detached"]: None}
    kept = {k["image"]: k for k in result["kept"]}
    assert set(kept) == {images["offline"], images["deleted"], images["unselected"]}
    assert (kept[images["offline"]]["vmid"], kept[images["offline"]]["node"]) == (102, "pve2")
    assert kept[images["offline"]]["name"] == "app1"  # from the image's metadata
    # (module.warn goes to the controller's display under pytest: the texts are tested in
    # test_proxmox.py, the warnings themselves by the integration tests.)
    assert [k["warn"] for k in result["kept"]] == [True, True, False]  # sorted: deleted, offline, unselected

    # A complete listing without guests 102 and 105: both gone; the limit still holds.
    complete = dict(incomplete, complete=True, problems=[], unseen=[], seen=[100])
    result = run_module(proxmox_backup_images.main, dict(args, coverage=complete))
    assert result["owned"] == {images["detached"]: None, images["deleted"]: None, images["offline"]: None}
    assert [k["image"] for k in result["kept"]] == [images["unselected"]]


def test_backup_images_without_coverage_proves_nothing(run_module, backup_pool) -> None:
    images = _vanished_pool(backup_pool)
    args = {"live_cluster": "pve-a", "disks": [pve_disk("web1")], "transfers": []}
    result = run_module(proxmox_backup_images.main, args)
    assert result["owned"] == {}
    assert {k["image"] for k in result["kept"]} == set(images.values())


def test_info_lists_the_saved_config(run_module, backup_pool) -> None:
    name = f"{UUID};scsi0;web1"
    backup_pool["images"] = {name: [D1], "bare": []}
    backup_pool["meta"] = {name: {"backurne.pve.config": '{"name": "web1"}', "other.key": "x"}}
    result = run_module(info.main, {"pool": "rbd", "with_meta": True})
    by_name = {image["name"]: image for image in result["images"]}
    assert by_name[name]["meta"] == {"backurne.pve.config": '{"name": "web1"}'}  # backurne.* only
    assert by_name["bare"]["meta"] == {}  # rbd prints nothing at all for no metadata
    plain = run_module(info.main, {"pool": "rbd"})
    assert all("meta" not in image for image in plain["images"])


# -- proxmox_discover against a fake API ------------------------------------------------------


class DiscoverApi:
    """A cluster of two nodes: pve2 offline (its guest 102 listed, unreadable), guest 107 without
    statistics, pending changes on 100."""

    def __init__(self, auth: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, **params: Any) -> Any:
        self.calls.append((path, params))
        answers: dict[str, Any] = {
            "cluster/resources": [
                {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running", "name": "web1"},
                {"id": "qemu/102", "type": "qemu", "vmid": 102, "node": "pve2", "status": "unknown"},
                {"id": "qemu/107", "type": "qemu", "vmid": 107, "node": "pve1", "status": "unknown"},
            ],
            "storage": [{"storage": "ceph-vm", "type": "rbd", "pool": "rbd"}],
            "nodes": [{"node": "pve1", "status": "online"}, {"node": "pve2", "status": "offline"}],
            "cluster/status": [
                {"type": "node", "name": "pve1", "online": 1},
                {"type": "node", "name": "pve2", "online": 0},
            ],
            "nodes/pve1/qemu/100/config": {"name": "web1", "memory": "4096", "scsi0": "ceph-vm:vm-100-disk-0,size=1G"},
            "nodes/pve1/qemu/100/pending": [{"key": "memory", "value": "4096", "pending": "8192"}],
            "nodes/pve1/qemu/107/config": {"name": "new-07.example.org", "scsi0": "ceph-vm:vm-107-disk-0,size=1G"},
            "nodes/pve1/qemu/107/pending": [],
        }
        if path.startswith("nodes/pve2/"):
            from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import PveError

            raise PveError(f"GET {path}: 595 No route to host")
        if path.endswith("/config"):
            assert params == {"current": 1}, params  # the running config, never the pending-merged one
        return answers[path]


def test_proxmox_discover_coverage_names_pending_and_limits(run_module, monkeypatch) -> None:
    monkeypatch.setattr(discover_job, "ProxmoxerApi", DiscoverApi)
    monkeypatch.setattr(proxmox_discover, "PROXMOXER_IMPORT_ERROR", None)
    args = {"api_host": "pve.example", "api_user": "root@pam", "api_password": "pw", "live_cluster": "pve-a"}
    result = run_module(proxmox_discover.main, {**args, "use_smbios": False})
    by_vmid = {d["guest"]["vmid"]: d for d in result["disks"]}
    assert by_vmid[107]["backup_image"] == "ceph-vm;vm-107-disk-0;new-07.example.org"
    assert by_vmid[100]["config"]["memory"] == "4096"
    assert by_vmid[100]["pending"] == {"memory": {"value": "4096", "pending": "8192"}}
    coverage = result["coverage"]
    assert coverage["complete"] is False and coverage["problems"] == ["node pve2 offline"]
    assert coverage["seen"] == [100, 107]
    assert coverage["unseen"] == [{"vmid": 102, "name": "?", "node": "pve2", "reason": "node pve2 offline"}]
    assert [(f["vmid"], f["name"]) for f in result["failed_guests"]] == [(102, "?")]
    assert "595" in result["failed_guests"][0]["error"] and "pve2" in result["failed_guests"][0]["error"]
    assert result["unmatched_limits"] == []

    result = run_module(proxmox_discover.main, {**args, "only_guests": ["new-*", "typo*"]})
    assert [d["guest"]["vmid"] for d in result["disks"]] == [107]
    assert result["unmatched_limits"] == ["typo*"]
    assert result["coverage"]["unselected"] == [100]
