# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible_collections.backurne.rbd.plugins.module_utils.report.records import (
    RECORD_FIELDS,
    checksum_records,
    image_records,
    report_lines,
)

SNAP = {
    "images": [
        {"image": "a", "backup_image": "c;a;None", "due": ["daily"], "kind": "full", "ok": True},
        {"image": "b", "backup_image": "c;b;None", "due": [], "kind": "none", "ok": True},
        {"image": "c", "backup_image": "c;c;None", "due": ["daily"], "kind": "incremental", "ok": True},
    ]
}
TRANSFER = {
    "images": [
        {
            "image": "a",
            "status": "transferred",
            "ok": True,
            "kind": "full",
            "snapshots": ["s1"],
            "bytes_logical": 2048,
            "bytes_wire": 1024,
            "duration": 1.5,
        },
        {
            "image": "c",
            "status": "failed",
            "ok": False,
            "kind": "incremental",
            "snapshots": [],
            "bytes_logical": 0,
            "bytes_wire": 0,
            "duration": 0.1,
            "error": "image 'c': import failed",
        },
    ]
}
CHECKSUM = {"images": [{"image": "a", "match": True, "error": None}]}
RET_BACKUP = {"images": [{"image": "c;a;None", "deleted": ["old1", "old2"], "error": None}]}


def test_records_merge_every_result() -> None:
    records = image_records("c", SNAP, TRANSFER, CHECKSUM, None, RET_BACKUP)
    by_image = {r["image"]: r for r in records}
    assert by_image["a"]["status"] == "transferred"
    assert by_image["a"]["verified"] is True
    assert by_image["a"]["expired_backup"] == 2
    assert by_image["a"]["bytes_wire"] == 1024
    assert by_image["b"]["status"] == "up-to-date"
    assert by_image["b"]["verified"] is None
    assert by_image["c"]["status"] == "failed"
    assert "import failed" in by_image["c"]["error"]


def test_report_lines_table_and_summary() -> None:
    lines = report_lines(image_records("c", SNAP, TRANSFER, CHECKSUM, None, RET_BACKUP))
    assert lines[0].split()[:2] == ["cluster", "image"]
    assert len(lines) == 5
    assert "3 image(s): 1 transferred, 1 failed" in lines[-1]
    assert "2.0 KiB" in lines[1]


def test_records_name_the_rbd_image_with_pool_and_namespace() -> None:
    plain = image_records("c", SNAP, TRANSFER, pool="rbd", namespace="ns1")
    assert {(r["image"], r["pool"], r["namespace"], r["rbd_image"]) for r in plain} == {
        ("a", "rbd", "ns1", "rbd/ns1/a"),
        ("b", "rbd", "ns1", "rbd/ns1/b"),
        ("c", "rbd", "ns1", "rbd/ns1/c"),
    }
    assert image_records("c", SNAP, pool="rbd")[0]["rbd_image"] == "rbd/a"
    # Proxmox VE plans carry their own pool and namespace (one cluster, several storages).
    pve = {"images": [dict(SNAP["images"][0], source_pool="rbd", source_namespace="pve-ct")]}
    (record,) = image_records("pve", pve, pool="ignored")
    assert (record["pool"], record["namespace"], record["rbd_image"]) == ("rbd", "pve-ct", "rbd/pve-ct/a")
    lines = report_lines(plain)
    assert lines[1].split()[:2] == ["c", "rbd/ns1/a"]
    # Records from before (no rbd_image) still print.
    old = [{k: v for k, v in r.items() if k not in ("pool", "namespace", "rbd_image")} for r in plain]
    assert report_lines(old)[1].split()[:2] == ["c", "a"]


def test_a_guest_that_may_be_frozen_shows_in_its_records_and_the_table() -> None:
    message = "guest 100 (web1) on node pve1 may be frozen: not confirmed thawed within 60 s"
    plans = {
        "images": [
            dict(SNAP["images"][0], freeze={"state": "may-be-frozen", "message": message}),
            dict(SNAP["images"][1], freeze={"state": "thawed", "message": None}),
        ]
    }
    records = image_records("c", plans, TRANSFER)
    by_image = {r["image"]: r for r in records}
    assert by_image["a"]["may_be_frozen"] is True and message in by_image["a"]["note"]
    assert by_image["a"]["status"] == "transferred"  # the disk's backup itself is fine
    assert by_image["b"]["may_be_frozen"] is False and by_image["b"]["note"] is None
    lines = report_lines(records)
    assert "full, MAY BE FROZEN" in lines[1]
    assert lines[-1].endswith("; 1 of a guest that may be frozen")


def test_records_carry_the_set_aside_snapshots_and_both_notes() -> None:
    transfer = {"images": [dict(TRANSFER["images"][0], note="HEAD of backup image 'c;a;None' ... rolled back")]}
    checksum = {
        "images": [
            {
                "image": "a",
                "match": False,
                "error": "image 'a' ...: checksums differ",
                "set_aside": ["s1"],
                "note": "s1 removed",
            }
        ]
    }
    by_image = {r["image"]: r for r in image_records("c", SNAP, transfer, checksum, None, None)}
    assert by_image["a"]["status"] == "failed" and by_image["a"]["verified"] is False
    assert by_image["a"]["set_aside"] == ["s1"]
    assert by_image["a"]["note"] == "HEAD of backup image 'c;a;None' ... rolled back; s1 removed"
    assert by_image["b"]["set_aside"] == [] and by_image["b"]["note"] is None
    (verified,) = checksum_records(
        "c", {"images": [dict(checksum["images"][0], backup_image="c;a;None", snapshot="s1")]}
    )
    assert (verified["status"], verified["set_aside"], verified["note"]) == ("failed", ["s1"], "s1 removed")
    assert set(verified) == set(RECORD_FIELDS)
