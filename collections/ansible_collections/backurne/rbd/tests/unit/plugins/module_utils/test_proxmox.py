# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import base64
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import (
    Coverage,
    DiscoveryOptions,
    ProxmoxConfigError,
    agent_settings,
    ceph_endpoint,
    discover,
    discovery_coverage,
    guest_disks,
    guests_to_read,
    kept_warning,
    offline_nodes,
    parse_boolean,
    parse_property_string,
    parse_tags,
    pending_changes,
    rbd_image_of,
    rbd_storages,
    renames,
    smbios_uuid,
    split_volume,
    tag_policy,
    unmatched_patterns,
    unseen_warning,
    vanished_fate,
)

UUID = "7b10d7af-b932-4c66-b2c3-3996152ec465"

STORAGE_CFG = [
    {"storage": "ceph-vm", "type": "rbd", "pool": "rbd-vm", "content": "images", "krbd": 0, "shared": 1},
    {"storage": "ceph-ct", "type": "rbd", "content": "rootdir", "namespace": "ct"},  # pool absent: rbd
    {"storage": "local", "type": "dir", "path": "/var/lib/vz", "content": "iso,vztmpl"},
    {"storage": "local-lvm", "type": "lvmthin", "vgname": "pve", "thinpool": "data"},
]

# The realistic VM of proxmox-api.md (simple-rbd.conf + efidisk-on-rbd.conf shapes).
QEMU_CONFIG: dict[str, Any] = {
    "boot": "order=scsi0;ide2;net0",
    "cores": 2,
    "memory": "2048",
    "name": "web1",
    "agent": "1,fstrim_cloned_disks=1",
    "smbios1": f"uuid={UUID}",
    "scsi0": "ceph-vm:vm-100-disk-0,discard=on,iothread=1,size=32G",
    "scsi1": "ceph-vm:vm-100-disk-1,backup=0,size=100G",
    "virtio0": "ceph-vm:base-9000-disk-0/vm-100-disk-2,size=8G",
    "ide2": "none,media=cdrom",
    "ide0": "ceph-vm:vm-100-cloudinit,media=cdrom",
    "efidisk0": "ceph-vm:vm-100-disk-3,efitype=4m,pre-enrolled-keys=1,size=528K",
    "tpmstate0": "ceph-vm:vm-100-disk-4,size=4M,version=v2.0",
    "unused0": "ceph-vm:vm-100-disk-5",
    "net0": "virtio=A2:C0:43:77:08:A0,bridge=vmbr0,firewall=1",
    "meta": "creation-qemu=9.0.2,ctime=1712345678",
    "digest": "1e6b0c3f9f0a6f8c0bd7e4a3d0d2f5c5b7a9e1d2",
}

LXC_CONFIG: dict[str, Any] = {
    "hostname": "ct1",
    "rootfs": "ceph-ct:vm-101-disk-0,size=8G",
    "mp0": "ceph-ct:vm-101-disk-1,mp=/srv/data,size=16G,backup=1",
    "mp1": "ceph-ct:vm-101-disk-2,mp=/srv/cache,size=4G",
    "mp2": "/mnt/bindmounts/shared,mp=/shared",
    "mp3": "/mnt/bind2,mp=/b2,backup=1",
    "unused0": "ceph-ct:vm-101-disk-3",
    "tags": "a;b",
}


def storages() -> dict[str, Any]:
    return rbd_storages(STORAGE_CFG)


# -- property strings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("ceph-vm:vm-100-disk-0,size=32G", "file", {"file": "ceph-vm:vm-100-disk-0", "size": "32G"}),
        ("volume=ceph:vm-1-disk-0,size=1G", "file", {"file": "ceph:vm-1-disk-0", "size": "1G"}),
        ("uuid=x,manufacturer=QkVTVA==,base64=1", None, {"uuid": "x", "manufacturer": "QkVTVA==", "base64": "1"}),
        ("1", "enabled", {"enabled": "1"}),
        ("enabled=1,freeze-fs-on-backup=0", "enabled", {"enabled": "1", "freeze-fs": "0"}),
        ("1,guest-fsfreeze=0", "enabled", {"enabled": "1", "freeze-fs": "0"}),
        ("a=b=c", None, {"a": "b=c"}),
        ("x=1,,", None, {"x": "1"}),
    ],
)
def test_property_string(text: str, default: str | None, expected: dict[str, str]) -> None:
    assert parse_property_string(text, default) == expected


@pytest.mark.parametrize(
    ("text", "default"),
    [("a=1,a=2", None), ("bare", None), ("x,y", "file"), ("=1", None), ("k=", None), ("1,enabled=0", "enabled")],
)
def test_property_string_refused(text: str, default: str | None) -> None:
    with pytest.raises(ProxmoxConfigError):
        parse_property_string(text, default, where="scsi0")


@pytest.mark.parametrize("value", ["1", "on", "YES", "True", 1, True])
def test_parse_boolean_true(value: object) -> None:
    assert parse_boolean(value) is True


@pytest.mark.parametrize("value", ["0", "off", "No", "FALSE", 0, False])
def test_parse_boolean_false(value: object) -> None:
    assert parse_boolean(value) is False


@pytest.mark.parametrize("value", ["2", "y", "", None, 2])
def test_parse_boolean_neither(value: object) -> None:
    assert parse_boolean(value) is None


# -- agent ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "enabled", "freeze"),
    [
        (None, False, False),
        ("1", True, True),
        ("0", False, False),
        ("1,freeze-fs=1", True, True),
        ("1,freeze-fs=0", True, False),
        ("enabled=1,fstrim_cloned_disks=1", True, True),
        ("enabled=0,freeze-fs=1", False, False),
        ("on,freeze-fs-on-backup=off", True, False),
        ("true,type=isa", True, True),
        (1, True, True),
    ],
)
def test_agent_settings(agent: object, enabled: bool, freeze: bool) -> None:
    config = {} if agent is None else {"agent": agent}
    settings = agent_settings(config)
    assert (settings.enabled, settings.freeze_fs) == (enabled, freeze)


def test_agent_bad_boolean_is_refused() -> None:
    with pytest.raises(ProxmoxConfigError, match="freeze-fs"):
        agent_settings({"agent": "1,freeze-fs=maybe"})


# -- smbios / identity -----------------------------------------------------------------------------


def test_smbios_plain_and_multi_key() -> None:
    assert smbios_uuid({"smbios1": f"uuid={UUID}"}) == UUID
    assert smbios_uuid({"smbios1": f"manufacturer=ACME,uuid={UUID},serial=1"}) == UUID
    assert smbios_uuid({}) is None
    assert smbios_uuid({"smbios1": "serial=1"}) is None


def test_smbios_base64_form() -> None:
    # PVE: uuid=<UUID> stays plain, the free-text values are base64 (qemu-server $smbios1_fmt).
    assert smbios_uuid({"smbios1": f"uuid={UUID},manufacturer=QkVTVA==,product=YmFja3VybmU=,base64=1"}) == UUID
    encoded = base64.b64encode(UUID.encode()).decode()
    assert smbios_uuid({"smbios1": f"uuid={encoded},base64=1"}) == UUID  # hand-encoded, still read
    with pytest.raises(ProxmoxConfigError, match="not a UUID"):
        smbios_uuid({"smbios1": "uuid=not*base64,base64=1"})
    with pytest.raises(ProxmoxConfigError, match="not a UUID"):
        smbios_uuid({"smbios1": f"uuid={encoded}"})  # base64 without base64=1


# -- volumes, storages, endpoints ----------------------------------------------------------------


def test_split_volume() -> None:
    assert split_volume("ceph-vm:vm-100-disk-0") == ("ceph-vm", "vm-100-disk-0")
    assert split_volume("local:108/vm-100-disk-1.raw") == ("local", "108/vm-100-disk-1.raw")
    assert split_volume("none") is None
    assert split_volume("/dev/sdb") is None
    assert split_volume("/mnt/bind") is None


def test_rbd_image_of_linked_clone() -> None:
    assert rbd_image_of("base-9000-disk-0/vm-100-disk-2") == "vm-100-disk-2"
    assert rbd_image_of("vm-100-disk-0") == "vm-100-disk-0"
    assert rbd_image_of("base-9000-disk-0") == "base-9000-disk-0"


def test_storage_pool_defaults_to_rbd_and_namespace() -> None:
    found = storages()
    assert set(found) == {"ceph-vm", "ceph-ct"}
    assert (found["ceph-vm"].pool, found["ceph-vm"].namespace) == ("rbd-vm", None)
    assert (found["ceph-ct"].pool, found["ceph-ct"].namespace) == ("rbd", "ct")


def test_ceph_endpoint_precedence() -> None:
    mapping = {"pve-a": {"ceph-vm": "node-a"}, "default": {"ceph-vm": "node-d", "ceph-ct": "node-ct"}}
    assert ceph_endpoint(mapping, "pve-a", "ceph-vm") == "node-a"
    assert ceph_endpoint(mapping, "pve-b", "ceph-vm") == "node-d"
    assert ceph_endpoint(mapping, "pve-a", "ceph-ct") == "node-ct"
    assert ceph_endpoint(mapping, "pve-a", "other") == "other"
    assert ceph_endpoint(None, "pve-a", "ceph-vm") == "ceph-vm"


# -- disk discovery --------------------------------------------------------------------------------


def test_qemu_disks_every_shape() -> None:
    found = guest_disks("qemu", QEMU_CONFIG, storages(), "pve-a", {"default": {"ceph-vm": "node-a"}})
    disks = {d.key: d for d in found.disks}
    assert sorted(disks) == ["efidisk0", "scsi0", "tpmstate0", "virtio0"]
    assert disks["virtio0"].image == "vm-100-disk-2"  # linked clone: after the slash
    assert disks["scsi0"].pool == "rbd-vm" and disks["scsi0"].endpoint == "node-a"
    reasons = {s.key: s.reason for s in found.skipped}
    assert reasons["scsi1"] == "backup=0"
    assert "cdrom" in reasons["ide2"] and "cdrom" in reasons["ide0"]
    assert "unused" in reasons["unused0"]
    assert "net0" not in reasons and "meta" not in reasons


@pytest.mark.parametrize(
    ("key", "value", "kept"),
    [
        ("sata5", "ceph-vm:vm-1-disk-0", True),
        ("sata6", "ceph-vm:vm-1-disk-0", False),  # not a drive key in PVE
        ("scsi30", "ceph-vm:vm-1-disk-0", True),
        ("scsi31", "ceph-vm:vm-1-disk-0", False),
        ("virtio15", "ceph-vm:vm-1-disk-0,backup=1", True),
        ("ide3", "ceph-vm:vm-1-disk-0,backup=no", False),
        ("ide1", "ceph-vm:vm-1-disk-0,backup=off", False),
        ("scsi2", "local-lvm:vm-1-disk-0,size=1G", False),  # not RBD
        ("scsi3", "/dev/disk/by-id/ata-X", False),  # passthrough
        ("scsi4", "file=ceph-vm:vm-1-disk-9,media=disk", True),
        ("efidisk0", "ceph-ct:vm-1-disk-1,size=128K", True),
        ("tpmstate0", "local:108/vm-100-disk-1.raw,size=4M,version=v2.0", False),
    ],
)
def test_qemu_single_disk(key: str, value: str, kept: bool) -> None:
    found = guest_disks("qemu", {key: value}, storages(), "c")
    assert bool(found.disks) is kept


def test_lxc_disks() -> None:
    found = guest_disks("lxc", LXC_CONFIG, storages(), "pve-a")
    disks = {d.key: d for d in found.disks}
    assert sorted(disks) == ["mp0", "rootfs"]
    assert (disks["rootfs"].pool, disks["rootfs"].namespace, disks["rootfs"].image) == ("rbd", "ct", "vm-101-disk-0")
    reasons = {s.key: s.reason for s in found.skipped}
    assert "backup=1" in reasons["mp1"]
    assert "mp2" in reasons  # a bind mount without backup=1
    assert "bind mount" in reasons["mp3"]  # a bind mount even with backup=1
    assert "unused" in reasons["unused0"]


def test_lxc_rootfs_even_with_backup_0_is_kept() -> None:
    found = guest_disks("lxc", {"rootfs": "ceph-ct:vm-7-disk-0,size=8G"}, storages(), "c")
    assert [d.key for d in found.disks] == ["rootfs"]


def test_unknown_guest_type_refused() -> None:
    with pytest.raises(ProxmoxConfigError):
        guest_disks("openvz", {}, storages(), "c")


# -- tags ------------------------------------------------------------------------------------------


def test_tags() -> None:
    assert parse_tags("backurne-off;Web") == ["backurne-off", "web"]
    assert parse_tags("a b,c") == ["a", "b", "c"]
    assert parse_tags(None) == []
    policy = tag_policy(["backurne-hourly", "backurne-off", "other", "backurne-weekly"])
    assert policy.off is True and policy.profiles == ("hourly", "weekly")
    assert tag_policy(["x-off"], prefix="x").off
    assert not tag_policy(["backurneoff", "backurne-"]).off


# -- whole discovery ---------------------------------------------------------------------------------


def resources() -> list[dict[str, Any]]:
    return [
        {
            "id": "qemu/100",
            "vmid": 100,
            "node": "pve1",
            "type": "qemu",
            "status": "running",
            "name": "web1",
            "template": 0,
            "tags": "backurne-hourly",
        },
        {
            "id": "lxc/101",
            "vmid": 101,
            "node": "pve2",
            "type": "lxc",
            "status": "running",
            "name": "ct1",
            "template": 0,
        },
        {
            "id": "qemu/102",
            "vmid": 102,
            "node": "pve1",
            "type": "qemu",
            "status": "stopped",
            "name": "db1",
            "template": 0,
        },
        {
            "id": "qemu/9000",
            "vmid": 9000,
            "node": "pve1",
            "type": "qemu",
            "status": "stopped",
            "name": "tpl",
            "template": 1,
        },
        {
            "id": "qemu/103",
            "vmid": 103,
            "node": "pve1",
            "type": "qemu",
            "status": "running",
            "name": "off1",
            "tags": "backurne-off",
        },
        {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online"},
        {"id": "storage/pve1/ceph-vm", "type": "storage", "storage": "ceph-vm", "node": "pve1"},
    ]


def configs() -> dict[int, dict[str, Any]]:
    return {
        100: QEMU_CONFIG,
        101: LXC_CONFIG,
        102: {"name": "db1", "agent": "1", "scsi0": "ceph-vm:vm-102-disk-0,size=1G"},  # no smbios1
        9000: {"name": "tpl", "scsi0": "ceph-vm:base-9000-disk-0,size=1G"},
        103: {"name": "off1", "scsi0": "ceph-vm:vm-103-disk-0,size=1G"},
    }


def options(**kwargs: Any) -> DiscoveryOptions:
    base: dict[str, Any] = {
        "pve_cluster": "pve-a",
        "endpoint_map": {"default": {"ceph-vm": "node-a", "ceph-ct": "node-b"}},
        "defaults": {"daily": {"count": 7}},
        "catalogue": {"hourly": {"count": 24}},
    }
    base.update(kwargs)
    return DiscoveryOptions(**base)


def test_discover_exactly_the_expected_disks() -> None:
    found = discover(resources(), configs(), STORAGE_CFG, options())
    names = sorted(d["backup_image"] for d in found["disks"])
    assert names == sorted(
        [
            f"{UUID};scsi0;web1",
            f"{UUID};virtio0;web1",
            f"{UUID};efidisk0;web1",
            f"{UUID};tpmstate0;web1",
            "ceph-ct;vm-101-disk-0;ct1",
            "ceph-ct;vm-101-disk-1;ct1",
            "ceph-vm;vm-102-disk-0;db1",  # uuid_fallback
        ]
    )
    by_vmid = {d["guest"]["vmid"]: d for d in found["disks"]}
    assert by_vmid[100]["guest"]["freeze"] is True
    assert by_vmid[101]["guest"]["freeze"] is False  # containers: never through the agent
    assert by_vmid[102]["guest"]["freeze"] is False  # stopped
    assert by_vmid[100]["profiles"] == {"daily": {"count": 7}, "hourly": {"count": 24}}
    assert by_vmid[101]["profiles"] == {"daily": {"count": 7}}
    assert by_vmid[100]["config"]["name"] == "web1"
    skipped = {(s["vmid"], s["disk"]): s["reason"] for s in found["skipped"]}
    assert skipped[(9000, None)] == "template"
    assert skipped[(103, None)] == "backups switched off"
    assert {d["endpoint"] for d in found["disks"]} == {"node-a", "node-b"}


def test_discover_templates_when_asked_and_no_fallback() -> None:
    found = discover(resources(), configs(), STORAGE_CFG, options(include_templates=True, uuid_fallback=False))
    names = {d["backup_image"] for d in found["disks"]}
    assert "ceph-vm;base-9000-disk-0;tpl" not in names  # no uuid and no fallback: skipped
    assert not any(";db1" in n for n in names)
    assert {(f["vmid"], f["disk"]) for f in found["failed"]} == {(102, "scsi0"), (9000, "scsi0")}
    assert all("uuid_fallback" in f["error"] for f in found["failed"])


def test_discover_without_smbios() -> None:
    found = discover(resources(), configs(), STORAGE_CFG, options(use_smbios=False))
    assert "ceph-vm;vm-100-disk-0;web1" in {d["backup_image"] for d in found["disks"]}


def test_discover_profiles_api_answers() -> None:
    answers = {100: {"backup": False}, 101: {"weekly": {"count": 4}}, 102: {"profiles": {"monthly": {"count": 2}}}}
    found = discover(resources(), configs(), STORAGE_CFG, options(), answers)
    vmids = {d["guest"]["vmid"] for d in found["disks"]}
    assert 100 not in vmids
    by_vmid = {d["guest"]["vmid"]: d for d in found["disks"]}
    assert by_vmid[101]["profiles"] == {"daily": {"count": 7}, "weekly": {"count": 4}}
    assert by_vmid[102]["profiles"] == {"daily": {"count": 7}, "monthly": {"count": 2}}


def test_discover_unknown_tag_profile_warns() -> None:
    res = [dict(resources()[2], tags="backurne-nope")]
    found = discover(res, configs(), STORAGE_CFG, options())
    assert any("nope" in w for w in found["warnings"])
    assert found["disks"][0]["profiles"] == {"daily": {"count": 7}}


def test_discover_bad_config_skips_guest_with_warning() -> None:
    bad = dict(configs())
    bad[102] = {"name": "db1", "scsi0": "ceph-vm:vm-102-disk-0,size=1G,size=2G"}
    found = discover(resources(), bad, STORAGE_CFG, options())
    assert 102 not in {d["guest"]["vmid"] for d in found["disks"]}
    assert [f["vmid"] for f in found["failed"]] == [102]
    assert "duplicate key" in found["failed"][0]["error"]


def test_renames_follow_the_guest_name() -> None:
    disks = [{"backup_image": f"{UUID};scsi0;web2"}, {"backup_image": "s;img;new"}]
    existing = [f"{UUID};scsi0;web1", "s;img;new", "other;x;None"]
    assert renames(disks, existing) == {f"{UUID};scsi0;web1": f"{UUID};scsi0;web2"}
    # Ambiguous: two old names for one IDENT;DISK -> nothing renamed.
    assert renames(disks, [f"{UUID};scsi0;a", f"{UUID};scsi0;b"]) == {}


# -- names from the config, pending changes, limits ------------------------------------------


def unnamed(vmid: int, node: str = "pve1", kind: str = "qemu") -> dict[str, Any]:
    """A /cluster/resources item of a guest without RRD statistics: no name, no template, status unknown."""
    return {"id": f"{kind}/{vmid}", "vmid": vmid, "node": node, "type": kind, "status": "unknown"}


def test_a_guest_without_statistics_is_named_after_its_config() -> None:
    res = [unnamed(107), unnamed(108, kind="lxc"), unnamed(109)]
    confs = {
        107: {"name": "new-07.example.org", "scsi0": "ceph-vm:vm-107-disk-0,size=1G"},
        108: {"hostname": "ct-08", "rootfs": "ceph-ct:vm-108-disk-0,size=1G"},
        109: {"name": "tpl-09", "template": 1, "scsi0": "ceph-vm:base-109-disk-0,size=1G"},
    }
    found = discover(res, confs, STORAGE_CFG, options())
    assert sorted(d["backup_image"] for d in found["disks"]) == [
        "ceph-ct;vm-108-disk-0;ct-08",
        "ceph-vm;vm-107-disk-0;new-07.example.org",
    ]
    assert {d["guest"]["name"] for d in found["disks"]} == {"new-07.example.org", "ct-08"}
    # Its template flag comes from the config too: a template stays out.
    assert {(s["vmid"], s["name"], s["reason"]) for s in found["skipped"]} == {(109, "tpl-09", "template")}


def test_name_patterns_apply_to_the_config_name() -> None:
    res = [unnamed(107), dict(resources()[0])]
    confs = {107: {"name": "new-07.example.org", "scsi0": "ceph-vm:vm-107-disk-0,size=1G"}, 100: QEMU_CONFIG}
    # Unnamed guests are read whatever the patterns say (their name is in their config)...
    assert [g.vmid for g in guests_to_read(res, options(only_guests=["web*"]))] == [100, 107]
    found = discover(res, confs, STORAGE_CFG, options(only_guests=["new-*"]))
    assert {d["guest"]["vmid"] for d in found["disks"]} == {107}
    found = discover(res, confs, STORAGE_CFG, options(exclude_guests=["new-07.*"]))
    assert 107 not in {d["guest"]["vmid"] for d in found["disks"]}
    assert (107, "new-07.example.org", "excluded") in {(s["vmid"], s["name"], s["reason"]) for s in found["skipped"]}


def test_pending_changes_keep_only_what_is_pending() -> None:
    items = [
        {"key": "scsi0", "value": "ceph-vm:vm-100-disk-0,size=32G"},
        {"key": "memory", "value": "4096", "pending": "8192"},
        {"key": "scsi2", "pending": "ceph-vm:vm-100-disk-9,size=1G"},
        {"key": "onboot", "value": 1, "delete": 1},
        {"key": "digest", "value": "abc"},
        "junk",
    ]
    assert pending_changes(items) == {
        "memory": {"value": "4096", "pending": "8192"},
        "scsi2": {"pending": "ceph-vm:vm-100-disk-9,size=1G"},
        "onboot": {"value": 1, "delete": 1},
    }
    assert pending_changes(None) == {}


def test_unmatched_patterns() -> None:
    assert unmatched_patterns(["web*", "typo*", "100"], ["web1", "db1", "100", "101"]) == ["typo*"]
    assert unmatched_patterns([], ["web1"]) == []


# -- deletion only on proof ------------------------------------------------------------------


def test_offline_nodes_from_either_listing() -> None:
    nodes = [{"node": "pve1", "status": "online"}, {"node": "pve2", "status": "offline"}]
    status = [
        {"type": "cluster", "name": "c"},
        {"type": "node", "name": "pve1", "online": 1},
        {"type": "node", "name": "pve3", "online": 0},
    ]
    assert offline_nodes(nodes, status) == ["pve2", "pve3"]
    assert offline_nodes([], []) == []


def test_coverage_of_a_complete_listing() -> None:
    found = discover(resources(), configs(), STORAGE_CFG, options(only_guests=["web1", "ct1", "tpl", "off1"]))
    cover = discovery_coverage(resources(), found, [])
    assert cover.complete and cover.problems == [] and cover.unseen == {}
    assert cover.seen == {100, 101, 9000, 103}  # a template, an off-tagged guest: seen, not backed up
    assert cover.unselected == {102}
    assert unseen_warning("pve-a", cover) is None


def test_coverage_with_a_node_offline_and_a_failed_read() -> None:
    res = [*resources(), unnamed(104, node="pve2")]
    confs = {k: v for k, v in configs().items() if k != 102}  # 102's config: a 500
    found = discover(res, confs, STORAGE_CFG, options())
    read_errors = [{"vmid": 102, "name": "db1", "error": "guest 102 (db1) on node pve1: HTTP 500"}]
    cover = discovery_coverage(res, found, ["pve2"], [], read_errors)
    assert not cover.complete
    assert cover.problems == ["node pve2 offline"]
    assert sorted(cover.unseen) == [101, 102, 104]  # 101 and 104 live on pve2
    assert cover.unseen[104] == {"vmid": 104, "name": "?", "node": "pve2", "reason": "node pve2 offline"}
    assert "HTTP 500" in cover.unseen[102]["reason"]
    text = unseen_warning("pve-a", cover)
    assert text is not None
    for part in ("pve-a", "node pve2 offline", "101 (ct1) on node pve2", "102 (db1) on node pve1", "104 (?)"):
        assert part in text, text
    # A round trip through the module result keeps every field.
    assert Coverage.from_dict(cover.to_dict()) == cover


def test_coverage_refused_config_is_not_seen() -> None:
    bad = dict(configs())
    bad[102] = {"name": "db1", "scsi0": "ceph-vm:vm-102-disk-0,size=1G,size=2G"}
    found = discover(resources(), bad, STORAGE_CFG, options())
    cover = discovery_coverage(resources(), found, [])
    assert not cover.complete and list(cover.unseen) == [102]


def test_coverage_problems_alone_make_it_incomplete() -> None:
    found = discover(resources(), configs(), STORAGE_CFG, options())
    cover = discovery_coverage(resources(), found, [], ["node list not readable: HTTP 500"])
    assert not cover.complete and not cover.unseen


def meta(vmid: str, name: str = "old") -> dict[str, str]:
    return {"backurne.pve.cluster": "pve-a", "backurne.pve.vmid": vmid, "backurne.pve.name": name}


def test_vanished_fate() -> None:
    cover = Coverage(
        complete=False,
        problems=["node pve2 offline"],
        seen={100},
        unseen={102: {"vmid": 102, "name": "?", "node": "pve2", "reason": "node pve2 offline"}},
        unselected={106},
    )
    assert vanished_fate(meta("100"), cover)[0] is True  # seen: the disk is no longer backed up
    gone, why, guest = vanished_fate(meta("102", "app1"), cover)
    assert (gone, guest) == (False, {"vmid": 102, "name": "app1", "node": "pve2"})
    assert "node pve2 offline" in str(why)
    assert vanished_fate(meta("106"), cover)[:2] == (False, "its guest is outside this run's limit")
    gone, why = vanished_fate(meta("105"), cover)[:2]
    assert not gone and "incomplete" in str(why)
    assert vanished_fate(meta("not-a-number"), cover)[0] is False
    complete = Coverage(complete=True, seen={100})
    assert vanished_fate(meta("105"), complete)[0] is True
    assert vanished_fate(meta("not-a-number"), complete)[0] is True
    # Nothing given: nothing proven.
    assert vanished_fate(meta("105"), Coverage.from_dict(None))[0] is False
    text = kept_warning("ceph-vm;vm-102-disk-0;app1", {"vmid": 102, "name": "app1", "node": "pve2"}, str(why))
    assert "102 (app1) on node pve2" in text and "neither expired" in text
