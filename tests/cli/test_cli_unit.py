# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CLI's configuration loader and argument handling, without Ceph (the lab tests are in
tests/integration/test_cli_mapping.py)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backurne_browse.catalog import CatalogError, DiskEntry, SnapshotEntry
from backurne_browse.mapping import Filesystem, Mapping
from backurne_cli import __version__
from backurne_cli import main as cli
from backurne_cli.config import DEFAULT_PATH, ConfigError, load_config, parse_config

S1 = "backup;daily;30;2026-11-28T10:00:00.000000"
S2 = "backup;daily;30;2026-11-29T10:00:00.000000"

GOOD = """
backup:
  ceph: {cluster: ceph, ceph_client: backurne, keyring: /etc/ceph/b.keyring, ceph_conf: /etc/ceph/backup.conf}
  pool: backups
  namespace: ns1
snap_prefix: bk
state_dir: /srv/backurne
live_clusters:
  prod1:
    host: live1.example
    ssh: {user: backurne, port: 2222, identity_file: ~/.ssh/id_backurne, known_hosts_file: /etc/backurne/known_hosts}
    ceph: {ceph_client: backurne}
    pool: vms
api:
  tokens_file: /etc/backurne/tokens
  listen: 0.0.0.0:8080
"""


def write(tmp_path: Path, text: str, name: str = "backurne.yml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class TestConfig:
    def test_full_file(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, GOOD))
        assert config.backup.pool == "backups" and config.backup.namespace == "ns1"
        assert config.backup.ceph.access().rbd_argv("ls") == [
            "rbd",
            "--cluster",
            "ceph",
            "--id",
            "backurne",
            "--keyring",
            "/etc/ceph/b.keyring",
            "-c",
            "/etc/ceph/backup.conf",
            "ls",
        ]
        assert config.snap_prefix == "bk" and config.state_dir == "/srv/backurne"
        prod1 = config.live_cluster("prod1")
        assert (prod1.host, prod1.pool, prod1.namespace) == ("live1.example", "vms", None)
        target = prod1.ssh_target()
        assert (target.user, target.port, target.known_hosts_file) == ("backurne", 2222, "/etc/backurne/known_hosts")
        assert target.identity_file is not None and not target.identity_file.startswith("~")
        assert prod1.runner().is_remote
        assert not config.backup_runner().is_remote
        assert config.api.tokens_file == "/etc/backurne/tokens" and config.api.anonymous is False
        assert config.api.listen == "0.0.0.0:8080"

    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("BACKURNE_STATE_DIR", raising=False)
        config = parse_config({})
        assert (config.backup.pool, config.backup.namespace, config.snap_prefix) == ("rbd", None, "backup")
        assert config.state_dir == "/var/lib/backurne"
        assert config.backup.ceph.ceph_client == "admin"
        assert dict(config.live_clusters) == {}
        assert (config.api.tokens_file, config.api.anonymous, config.api.listen) == (None, False, "127.0.0.1:8080")
        assert parse_config(None).backup.pool == "rbd"

    def test_unknown_live_cluster_lists_known(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, GOOD))
        with pytest.raises(ConfigError, match=r"no live cluster 'prod2' in live_clusters \(known: prod1\)"):
            config.live_cluster("prod2")

    @pytest.mark.parametrize(
        ("document", "culprit"),
        [
            ({"backup": {"ceph": {"keyrin": "/x"}}}, "backup.ceph.keyrin: unknown key"),
            ({"backup": {"pool": "a/b"}}, "backup.pool: 'a/b' is not a valid"),
            ({"backup": {"namespace": 3}}, "backup.namespace: must be a non-empty string"),
            ({"backup": []}, "backup: must be a mapping"),
            ({"snap_prefix": "a;b"}, "snap_prefix:"),
            ({"state_dir": "relative/dir"}, "state_dir: must be an absolute path"),
            ({"live_clusters": {"p": {"pool": "x"}}}, "live_clusters.p.host: is required"),
            ({"live_clusters": {"p": {"host": "h", "ssh": {"port": 70000}}}}, "live_clusters.p.ssh.port"),
            (
                {"live_clusters": {"p": {"host": "h", "ssh": {"password": "x"}}}},
                "live_clusters.p.ssh.password: unknown key",
            ),
            ({"live_clusters": ["p"]}, "live_clusters: must be a mapping"),
            ({"live_clusters": {"a;b": {"host": "h"}}}, "live_clusters.a;b"),
            ({"api": {"anonymous": "yes"}}, "api.anonymous: must be true or false"),
            ({"apii": {}}, "apii: unknown key"),
            (["backup"], "top level: must be a mapping"),
        ],
    )
    def test_errors_name_the_key(self, document: Any, culprit: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_config(document, "/etc/backurne/backurne.yml")
        assert str(info.value).startswith("/etc/backurne/backurne.yml: ")
        assert culprit in str(info.value)

    def test_state_dir_from_environment_unless_the_file_sets_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # `backurne status` must read the directory the transfer module writes to ($BACKURNE_STATE_DIR).
        monkeypatch.setenv("BACKURNE_STATE_DIR", "/run/backurne-test")
        assert parse_config({}).state_dir == "/run/backurne-test"
        assert parse_config({"state_dir": "/srv/x"}).state_dir == "/srv/x"

    def test_precedence_explicit_then_env_then_default(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        explicit = write(tmp_path, "backup: {pool: explicit}", "a.yml")
        from_env = write(tmp_path, "backup: {pool: env}", "b.yml")
        monkeypatch.setenv("BACKURNE_CONFIG", from_env)
        assert load_config(explicit).backup.pool == "explicit"
        assert load_config(None).backup.pool == "env"
        monkeypatch.delenv("BACKURNE_CONFIG")
        from backurne_cli import config as config_module

        assert config_module.config_path(None) == DEFAULT_PATH

    def test_missing_and_invalid_files(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(ConfigError, match=r"missing\.yml not found$"):
            load_config(str(tmp_path / "missing.yml"))
        monkeypatch.delenv("BACKURNE_CONFIG", raising=False)
        monkeypatch.setattr("backurne_cli.config.DEFAULT_PATH", str(tmp_path / "none.yml"))
        with pytest.raises(ConfigError, match=r"not found \(give one with --config or \$BACKURNE_CONFIG\)"):
            load_config(None)
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(write(tmp_path, "backup: [unclosed"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class TestUsage:
    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["bogus"],
            ["map", "web1"],
            ["ls", "a", "b"],
            ["extract", "web1", "latest", "etc"],
            ["extract", "web1", "latest", "--to", "/tmp"],
            ["restore", "web1", "latest"],
            ["restore", "web1", "latest", "--cluster", "c", "--compression-level", "25"],
            ["ls", "--timeout", "0"],
            ["ls", "--timeout", "soon"],
        ],
    )
    def test_bad_command_line_exits_2(self, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_USAGE
        assert out == ""
        assert "usage: backurne" in err

    def test_version_needs_no_configuration(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        assert run(capsys, "--config", str(tmp_path / "missing"), "version") == (0, f"backurne {__version__}\n", "")
        code, out, _ = run(capsys, "version", "--json")
        assert code == 0 and json.loads(out) == {"version": __version__}

    def test_missing_configuration_exits_1(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, out, err = run(capsys, "ls", "--config", str(tmp_path / "missing.yml"))
        assert code == cli.EXIT_ERROR and out == ""
        assert err == f"backurne: error: configuration file {tmp_path / 'missing.yml'} not found\n"

    def test_bad_configuration_names_key(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = write(tmp_path, "backup: {pooll: x}")
        code, _, err = run(capsys, "list-mapped", "--config", path)
        assert code == cli.EXIT_ERROR
        assert "backup.pooll: unknown key" in err

    @pytest.mark.parametrize(
        "command", [["map", "web1", "latest"], ["unmap", "--all"], ["extract", "w", "s", "p", "--to", "/"]]
    )
    def test_mapping_needs_root(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
    ) -> None:
        monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
        code, _, err = run(capsys, *command, "--config", write(tmp_path, "{}"))
        assert code == cli.EXIT_ERROR
        assert "needs root" in err

    def test_unmap_needs_image_and_snapshot(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
        code, _, err = run(capsys, "unmap", "web1", "--config", write(tmp_path, f"state_dir: {tmp_path}/state"))
        assert code == cli.EXIT_ERROR
        assert "unmap needs IMAGE and SNAPSHOT (or --all)" in err


def snapshot(name: str) -> SnapshotEntry:
    _prefix, profile, count, created = name.split(";")
    return SnapshotEntry(name, profile, int(count), datetime.fromisoformat(created), 1 << 20)


DISKS = [
    DiskEntry("prod;web1;None", "prod", "web1", "None", 8 << 20, (snapshot(S1), snapshot(S2)), ("manual",)),
    DiskEntry("uuid-9;scsi0;db1", "uuid-9", "scsi0", "db1", 1 << 30, (), ()),
]


class TestLs:
    @pytest.fixture(autouse=True)
    def fake_catalog(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(cli, "list_disks", lambda runner, pool, namespace, prefix: list(DISKS))

        def find_disk(runner: Any, pool: str, namespace: str | None, prefix: str, ref: str) -> DiskEntry:
            from backurne_browse.catalog import resolve_disk

            return resolve_disk(DISKS, ref)

        monkeypatch.setattr(cli, "find_disk", find_disk)

    def test_table(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, out, err = run(capsys, "--config", write(tmp_path, "{}"), "ls")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == ["ident", "disk", "comment", "snapshots", "newest", "backup", "size"]
        assert lines[1].split() == ["prod", "web1", "None", "2", "2026-11-29", "10:00:00", "8.0", "MiB"]
        assert lines[2].split() == ["uuid-9", "scsi0", "db1", "0", "-", "1.0", "GiB"]

    def test_json_before_or_after_the_command(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        config = write(tmp_path, "{}")
        first = run(capsys, "--json", "--config", config, "ls")
        second = run(capsys, "ls", "--json", "--config", config)
        assert first == second
        document = json.loads(first[1])
        assert [d["image"] for d in document] == ["prod;web1;None", "uuid-9;scsi0;db1"]
        assert document[0]["newest_snapshot"] == S2 and document[0]["snapshot_count"] == 2

    def test_one_image(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, out, _ = run(capsys, "--config", write(tmp_path, "{}"), "ls", "web1", "--json")
        document = json.loads(out)
        assert code == 0 and document["image"] == "prod;web1;None"
        assert [s["name"] for s in document["snapshots"]] == [S1, S2]
        assert document["foreign_snapshots"] == ["manual"]
        code, out, _ = run(capsys, "--config", write(tmp_path, "{}"), "ls", "prod;web1")
        assert out.splitlines()[1].split()[:4] == ["date", "(UTC)", "profile", "count"]
        assert out.splitlines()[2].split() == ["2026-11-28", "10:00:00", "daily", "30", S1]

    def test_unknown_image_exits_1(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        code, out, err = run(capsys, "--config", write(tmp_path, "{}"), "ls", "web9")
        assert (code, out) == (1, "")
        assert err == "backurne: error: no backup image matches 'web9'\n"
        assert isinstance(CatalogError("x"), LookupError)


def mapping(image: str, snap: str) -> Mapping:
    return Mapping(
        id="x",
        pool="rbd",
        namespace=None,
        image=image,
        snapshot=snap,
        clone="backurne-map.x",
        created="",
        root="/r",
        filesystems=[Filesystem("disk", "/dev/loop0", "ext4", "/r/mnt/disk", "ro")],
    )


MAPPINGS = [mapping("prod;web1;None", S1), mapping("prod;web1;None", S2), mapping("prod;web2;None", S1)]


class TestMatchMapped:
    @pytest.mark.parametrize(
        ("image", "snap", "expected"),
        [
            ("prod;web1;None", S1, [("prod;web1;None", S1)]),
            ("web1", "2026-11-29", [("prod;web1;None", S2)]),
            ("prod;web2", "latest", [("prod;web2;None", S1)]),
            ("web1", "latest", [("prod;web1;None", S2)]),
            ("prod", "2026-11-28", [("prod;web1;None", S1), ("prod;web2;None", S1)]),
            ("web3", "latest", []),
            ("web1", "2027", []),
        ],
    )
    def test_match(self, image: str, snap: str, expected: list[tuple[str, str]]) -> None:
        assert [(m.image, m.snapshot) for m in cli._match_mapped(MAPPINGS, image, snap)] == expected


def test_table_and_sizes() -> None:
    assert cli.table(("a", "long header"), [("xxxx", None), (1, "y")]) == "a     long header\nxxxx\n1     y"
    assert [cli.human_size(n) for n in (None, 0, 1023, 1024, 5 << 30)] == ["?", "0 B", "1023 B", "1.0 KiB", "5.0 GiB"]


class TestMapAlreadyMapped:
    @pytest.mark.parametrize(("status", "code"), [("mapped", 0), ("mapping", 1)])
    def test_existing_mapping(
        self,
        capsys: pytest.CaptureFixture[str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        status: str,
        code: int,
    ) -> None:
        from backurne_browse.mapping import AlreadyMapped

        existing = mapping("prod;web1;None", S2)
        existing.status = status

        class FakeMapper:
            def map(self, image: str, snapshot: str) -> Mapping:
                raise AlreadyMapped(existing)

        monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
        monkeypatch.setattr(cli, "_resolve", lambda config, image, snap, timeout: (DISKS[0], S2))
        monkeypatch.setattr(cli, "_mapper", lambda config, timeout: FakeMapper())
        result, out, err = run(capsys, "--config", write(tmp_path, "{}"), "map", "web1", "latest")
        assert result == code
        assert "already mapped" in err
        if code == 0:
            assert "/r/mnt/disk" in out
        else:
            assert out == "" and "backurne unmap 'prod;web1;None'" in err
