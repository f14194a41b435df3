# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.usage import collect_stats, format_stats, parse_du

# Captured from the lab (Ceph 16.2.15): `rbd du --format json -p rbd --namespace h6fix` on a
# namespace holding "prod1;web1;None" (16 MiB, two snapshots of 4 MiB each), "prod1;db;None"
# (empty) and "notours".
DU = json.loads((Path(__file__).parent / "fixtures" / "rbd_du_16.2.json").read_text())
MiB = 1024 * 1024


def test_parse_du_per_backup_image_and_totals() -> None:
    usage = parse_du(DU, "rbd", "h6fix")
    assert [image.to_dict() for image in usage.images] == [
        {"name": "prod1;db;None", "provisioned": 8 * MiB, "used": 0, "used_snapshots": 0, "snapshots": 0},
        {
            "name": "prod1;web1;None",
            "provisioned": 16 * MiB,
            "used": 8 * MiB,
            "used_snapshots": 8 * MiB,
            "snapshots": 2,
        },
    ]
    assert usage.total_used == 8 * MiB and usage.total_provisioned == 24 * MiB
    doc = usage.to_dict()
    assert doc["image_count"] == 2 and doc["namespace"] == "h6fix"


def test_parse_du_every_image_matches_rbd_totals() -> None:
    usage = parse_du(DU, "rbd", backup_only=False)
    assert usage.total_used == DU["total_used_size"]
    assert usage.total_provisioned == DU["total_provisioned_size"]
    assert [image.name for image in usage.images] == ["notours", "prod1;db;None", "prod1;web1;None"]


def test_parse_du_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="no 'images' list"):
        parse_du({"pools": []}, "rbd")


def test_collect_stats_one_rbd_du_per_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_json(self: RbdRunner, args: list[str], *, timeout: Any = None) -> Any:
        calls.append(list(args))
        return DU

    monkeypatch.setattr(RbdRunner, "json", fake_json)
    usage = collect_stats(RbdRunner(CephAccess()), "rbd", "h6fix")
    assert calls == [["du", "--pool=rbd", "--namespace=h6fix"]]
    text = format_stats(usage)
    assert text.splitlines()[0].split() == ["image", "snaps", "provisioned", "used", "in", "snapshots"]
    assert text.splitlines()[-1] == "2 image(s) in rbd/h6fix: 8.0 MiB used, 24.0 MiB provisioned"
