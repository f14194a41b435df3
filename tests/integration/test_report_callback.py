"""The report callback on a real run: its JSON report and Prometheus file agree with the lab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playbook_helpers import (
    assert_ok,
    backup_image,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    snaps,
    spec,
)


def test_json_report_and_prometheus_file_match_the_lab(lab, ns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for seed, name in enumerate(("r1", "r2")):
        lab.write_image("live", spec(ns, name), 8, seed=seed, admin=True)
    report, metrics = tmp_path / "report.json", tmp_path / "backurne.prom"
    monkeypatch.setenv("BACKURNE_REPORT_JSON", str(report))
    monkeypatch.setenv("BACKURNE_REPORT_PROMETHEUS", str(metrics))
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 3}})
    assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars={"backurne_verify": True}))

    document = json.loads(report.read_text())
    records = {rec["image"]: rec for rec in document["images"]}
    assert set(records) == {"r1", "r2"}
    assert document["summary"]["transferred"] == 2 and document["summary"]["failed"] == 0
    name = cluster_name(inv)
    for image, rec in records.items():
        on_backup = snaps(lab, "backup", ns, backup_image(name, image))
        assert rec["backup_image"] == backup_image(name, image)
        assert rec["kind"] == "full" and rec["status"] == "transferred"
        assert rec["snapshots"] == on_backup  # what the report says was sent is what backup holds
        assert rec["verified"] is True
        assert rec["bytes_logical"] >= 8 * 1024 * 1024  # 8 MiB of incompressible data was written
        assert rec["bytes_wire"] > 0

    lines = metrics.read_text().splitlines()
    for image in ("r1", "r2"):
        labels = f'cluster="{name}",image="{image}"'
        assert f"backurne_image_failed{{{labels}}} 0" in lines
        assert any(line.startswith(f"backurne_image_last_success_timestamp_seconds{{{labels}}} ") for line in lines)
        logical = [
            line for line in lines if line.startswith(f'backurne_image_transfer_bytes{{{labels},kind="logical"}}')
        ]
        assert logical == [
            f'backurne_image_transfer_bytes{{{labels},kind="logical"}} {records[image]["bytes_logical"]}'
        ]
    assert "backurne_run_images_transferred 2" in lines
