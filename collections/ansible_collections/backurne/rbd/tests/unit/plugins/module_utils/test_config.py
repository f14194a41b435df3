# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.policy.run_config import ConfigError, validate_run_config

PROFILES = {"daily": {"count": 7}}
LIVE = {"live-node": {"name": "prod1", "type": "plain", "pool": "rbd"}}


def run(**overrides):
    args = {
        "profiles": PROFILES,
        "snap_prefix": "backup",
        "live_clusters": LIVE,
        "backup_nodes": ["backup1"],
        "backup": {"pool": "backups"},
    }
    args.update(overrides)
    return validate_run_config(**args)


def test_valid_config_is_normalised() -> None:
    config = run()
    assert config["profiles"] == {"daily": {"count": 7, "interval": 86400, "max_on_live": 0, "priority": "normal"}}
    cluster = config["live_clusters"][0]
    assert cluster["host"] == "live-node"
    assert cluster["name"] == "prod1"
    assert cluster["namespace"] is None
    assert cluster["workers"] == 4
    assert config["backup"]["pool"] == "backups"
    assert config["backup"]["ssh"] == {"user": "root", "port": 22, "control_master": True}


@pytest.mark.parametrize(
    ("overrides", "culprit"),
    [
        ({"profiles": {"daily": {"cuont": 7}}}, "cuont"),
        ({"profiles": {"daily": {"count": 0}}}, "daily"),
        ({"profiles": {"custom": {"count": 3, "interval": "1x"}}}, "1x"),
        ({"profiles": {"custom": {"count": 3}}}, "custom"),
        ({"snap_prefix": "back;up"}, "back;up"),
        ({"snap_prefix": "it's"}, "it's"),
        ({"backup_nodes": []}, "backup_nodes"),
        ({"live_clusters": {}}, "live_clusters"),
        ({"live_clusters": {"n1": {"name": "a;b"}}}, "a;b"),
        ({"live_clusters": {"n1": {"type": "ceph"}}}, "'ceph'"),
        ({"live_clusters": {"n1": {"pools": "rbd"}}}, "'pools'"),
        ({"live_clusters": {"n1": None}}, "'n1'"),
        ({"live_clusters": {"n1": {"workers": 0}}}, "workers"),
        ({"live_clusters": {"n1": {"include": "web*"}}}, "include"),
        ({"live_clusters": {"n1": {"name": "x"}, "n2": {"name": "x"}}}, "'n2'"),
        ({"live_clusters": {"n1": {"ceph": {"ceph_user": "x"}}}}, "ceph_user"),
        ({"backup": {"pool": "b", "ssh": {"port": -1}}}, "ssh.port"),
        ({"backup": {"pool": "b", "sshh": {}}}, "sshh"),
        ({"limit_clusters": ["nope"]}, "nope"),
    ],
)
def test_bad_input_names_the_culprit(overrides, culprit) -> None:
    with pytest.raises(ConfigError) as caught:
        run(**overrides)
    assert culprit in str(caught.value)


def test_limit_clusters_selects() -> None:
    live = {"n1": {"name": "a"}, "n2": {"name": "b"}}
    config = run(live_clusters=live, limit_clusters=["b"])
    assert [c["name"] for c in config["live_clusters"]] == ["b"]
