# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`backurne migrate-config` on 2.x configuration files of the shapes 2.x's sample shows (plain,
proxmox, ceph_endpoint, hooks, profiles_api): the inventory it writes passes the preflight's own
validation, every setting gets an outcome, and the file is never executed."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.backurne.rbd.plugins.module_utils.policy.run_config import validate_run_config
from backurne_cli import main as cli
from backurne_cli.migrate import MigrationError, migrate, read_v2_config

FIXTURES = Path(__file__).parent / "fixtures" / "v2"
SHAPES = ("plain", "proxmox", "ceph_endpoint", "hooks", "profiles_api")


def run_cli(source: Path, out: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.main(["migrate-config", str(source), "--out", str(out), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def inventory(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    hosts = yaml.safe_load((out / "hosts.yml").read_text())["all"]["children"]
    group_vars = yaml.safe_load((out / "group_vars" / "all" / "main.yml").read_text())
    return hosts, group_vars


def preflight(hosts: dict[str, Any], group_vars: dict[str, Any]) -> dict[str, Any]:
    """What backup.yml's first task does with this inventory (profiles defaulting as it does)."""
    live = {name: spec["backurne_live"] for name, spec in hosts["live_clusters"]["hosts"].items()}
    backup_nodes = list(hosts["backup_nodes"]["hosts"])
    backup = hosts["backup_nodes"]["hosts"][backup_nodes[0]]["backurne_backup"]
    profiles = {
        name: spec if name in ("hourly", "daily", "weekly", "monthly") else {**spec, "interval": "365d"}
        for name, spec in group_vars["backurne_profiles"].items()
    }
    return validate_run_config(profiles, group_vars["backurne_snap_prefix"], live, backup_nodes, backup)


def outcomes(result: dict[str, Any]) -> dict[str, str]:
    return {note["setting"]: note["outcome"] for note in result["settings"]}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_gives_an_inventory_the_preflight_accepts(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(FIXTURES / f"{shape}.conf", tmp_path, capsys=capsys)
    hosts, group_vars = inventory(tmp_path)
    config = preflight(hosts, group_vars)
    assert config["live_clusters"], shape
    assert sorted(Path(path).name for path in result["written"])[:2] == ["hosts.yml", "main.yml"]
    # Every "not carried" says why.
    assert all(note["detail"] for note in result["not_carried"])


def test_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(FIXTURES / "plain.conf", tmp_path, capsys=capsys)
    hosts, group_vars = inventory(tmp_path)
    host = hosts["live_clusters"]["hosts"]["cute-cluster"]
    assert host["ansible_host"] == "ceph.example.org"
    assert host["backurne_live"] == {"name": "cute-cluster", "type": "plain", "workers": 3, "pool": "vms"}
    assert hosts["backup_nodes"]["hosts"]["backup1"]["backurne_backup"]["pool"] == "backups"
    assert hosts["backup_nodes"]["hosts"]["backup1"]["backurne_backup"]["workers"] == 8
    assert group_vars["backurne_snap_prefix"] == "bk"
    assert group_vars["backurne_profiles"]["hourly"] == {"count": 48, "max_on_live": 0, "priority": "high"}
    assert group_vars["backurne_extra_retention_time"] == "30d"  # 2.x counted days
    assert group_vars["backurne_compression"] is True
    assert group_vars["backurne_hasher"] == ["/usr/bin/xxhsum"]
    seen = outcomes(result)
    assert group_vars["backurne_legacy_lockdir"] == "/var/lock/backurne"
    for setting in ("check_db", "pretty_colors", "log_level", "report_time"):
        assert seen[setting] == "not carried", setting
    renamed = ("extra_retention_time", "download_compression", "backup_worker", "live_worker", "hash_binary", "lockdir")
    for setting in renamed:
        assert seen[setting] == "renamed", setting
    assert not (tmp_path / "group_vars" / "all" / "vault.yml").exists()  # no secret in a plain config


def test_proxmox_password_goes_to_a_private_vault_file_and_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate-config", str(FIXTURES / "proxmox.conf"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "awesome-passwd" not in printed
    hosts, group_vars = inventory(tmp_path)
    assert "awesome-passwd" not in (tmp_path / "hosts.yml").read_text() + json.dumps(group_vars)
    vault = tmp_path / "group_vars" / "all" / "vault.yml"
    assert yaml.safe_load(vault.read_text()) == {"vault_backurne_clusterpx_api_password": "awesome-passwd"}
    assert stat.S_IMODE(vault.stat().st_mode) == 0o600
    pve = hosts["live_clusters"]["hosts"]["clusterpx"]["backurne_live"]["proxmox"]
    assert pve["api_password"] == "{{ vault_backurne_clusterpx_api_password }}"
    assert (pve["api_host"], pve["api_user"], pve["validate_certs"]) == ("clusterpx.example.org", "root@pam", True)
    assert (pve["use_smbios"], pve["freeze"], pve["uuid_fallback"]) == (True, False, False)
    # bwlimit is 1024 * 1024 in the file: read (constant arithmetic), then reported as not carried.
    lines = {line.split()[0]: line for line in printed.splitlines()}
    for setting in ("tc_iface", "tc_minor", "bwlimit"):
        assert "not carried" in lines[f"live_clusters[clusterpx].{setting}"]
    assert "not carried" in lines["influxdb"] and "not carried" in lines["report_time"]


def test_ceph_endpoint_fqdns_become_inventory_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(FIXTURES / "ceph_endpoint.conf", tmp_path, capsys=capsys)
    hosts, _ = inventory(tmp_path)
    live = hosts["live_clusters"]["hosts"]["proxmox32-lab"]["backurne_live"]
    assert live["ceph_endpoint"] == {
        "default": {"ceph1": "cluster1.example.org"},
        "proxmox32-lab": {"pool-ssd": "cephlab.example.org", "pool-hdd": "cephlab.example.org"},
    }
    assert sorted(hosts["ceph_endpoints"]["hosts"]) == ["cephlab.example.org", "cluster1.example.org"]
    assert live["proxmox"]["validate_certs"] is False  # tls: False
    seen = outcomes(result)
    assert seen["ceph_endpoint.old-cluster"] == "not carried"
    assert seen["live_clusters[rook].fqdn"] == "not carried"
    assert seen["live_clusters[rook].get_helper"] == seen["live_clusters[rook].use_helper"] == "not carried"
    assert "ansible_host" not in hosts["live_clusters"]["hosts"]["rook"]


def test_hooks_go_to_each_proxmox_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(FIXTURES / "hooks.conf", tmp_path, capsys=capsys)
    hosts, _ = inventory(tmp_path)
    pve = hosts["live_clusters"]["hosts"]["pve"]["backurne_live"]["proxmox"]
    assert pve["hooks"] == {"pre_vm": "/usr/local/lib/backurne/pre_vm", "post_vm": "/usr/local/lib/backurne/post_vm"}
    not_carried = {note["setting"]: note["detail"] for note in result["not_carried"]}
    assert "interval" in not_carried["profiles"] and "yearly" in not_carried["profiles"]
    assert "BACKURNE_REPORT_JSON" in not_carried["report_time"]


def test_hooks_without_a_proxmox_cluster_are_not_carried() -> None:
    text = (
        "config = {'live_clusters': [{'name': 'c', 'fqdn': 'c.example', 'pool': 'rbd'}], 'hooks': {'pre_disk': '/x'}}"
    )
    notes = {note.setting: note for note in migrate(text).notes}
    assert notes["hooks"].outcome == "not carried" and "Proxmox" in notes["hooks"].detail


def test_profiles_api_carried_and_non_literals_reported_never_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(FIXTURES / "profiles_api.conf", tmp_path, capsys=capsys)
    hosts, group_vars = inventory(tmp_path)
    pve = hosts["live_clusters"]["hosts"]["pve-a"]["backurne_live"]["proxmox"]
    assert pve["profiles_api"] == "https://cmdb.example.org/backurne/profiles"
    not_carried = {note["setting"]: note["detail"] for note in result["not_carried"]}
    assert "os.environ.get" in not_carried["hash_binary"]
    assert "backurne_hasher" not in group_vars  # no 2.x default stands in for a value it cannot read
    assert "never executed" in not_carried["line 2"]  # `import os`
    assert not_carried["fancy_new_thing"] == "unknown 2.x setting"


def test_the_file_is_parsed_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = (
        f"open({str(marker)!r}, 'w').write('x')\n"
        f"config = {{'snap_prefix': __import__('os').system('touch {marker}'), 'profiles': {{}}}}\n"
    )
    settings, notes = read_v2_config(text)
    assert not marker.exists()
    assert settings == {"profiles": {}}
    assert {note.setting for note in notes} == {"line 1", "snap_prefix"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config = [1, 2]", "not a dict literal"),
        ("settings = {}", "no 'config = {...}'"),
        ("config = {", "syntax error"),
        ("config = {'live_clusters': [{'fqdn': 'x'}]}", r"live_clusters\[0\]"),
    ],
)
def test_bad_files_are_refused_naming_the_cause(text: str, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        migrate(text)


def test_existing_files_are_not_replaced_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hosts.yml").write_text("mine\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["migrate-config", str(FIXTURES / "plain.conf"), "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert (tmp_path / "hosts.yml").read_text() == "mine\n"
    assert not (tmp_path / "group_vars").exists()
    run_cli(FIXTURES / "plain.conf", tmp_path, "--force", capsys=capsys)
    assert "cute-cluster" in (tmp_path / "hosts.yml").read_text()


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(FIXTURES / "plain.conf", tmp_path / "inv", "--dry-run", capsys=capsys)
    assert result["written"] == [] and not (tmp_path / "inv").exists()
    assert outcomes(result)["lockdir"] == "renamed"
