# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import (
    make_lock_id,
    parse_lock_id,
    stale_reason,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
    CephAccess,
    ImageSpec,
    RbdError,
    RbdRunner,
    SshTarget,
    in_creation_order,
    quote_argv,
    stderr_cause,
)
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import compare_snapshot, snapshot_checksum

HOSTILE = [
    "a b",
    "it's",
    'say "hi"',
    "$(touch {marker})",
    "`touch {marker}`",
    "x;touch {marker}",
    "x && touch {marker}",
    "x|touch {marker}",
    "-leading",
    "--image=evil",
    "*",
    "~root",
    "$HOME",
    "${IFS}",
    "tab\there",
    "new\nline",
    "back\\slash",
    "",
    "ünïcödé",
    "!bang",
    "#hash",
]


def hostile_words(marker: Path) -> list[str]:
    return [word.replace("{marker}", str(marker)) for word in HOSTILE]


def bash_printf(command: str) -> list[str]:
    """Run `command` the way a remote login shell runs an ssh command; return printf's words."""
    out = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout.decode()
    return out.split("\0")[:-1]


class TestQuoteArgv:
    def test_words_arrive_intact_and_nothing_runs(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        words = hostile_words(marker)
        command = quote_argv(["printf", "%s\\0", *words])
        assert bash_printf(command) == words
        assert not marker.exists()

    def test_double_layer_as_for_a_remote_pipeline(self, tmp_path: Path) -> None:
        # ssh hands one string to the remote shell, which runs `bash -c SCRIPT`: two layers.
        marker = tmp_path / "pwned"
        words = hostile_words(marker)
        script = quote_argv(["printf", "%s\\0", *words]) + " | " + quote_argv(["cat"])
        outer = quote_argv(["bash", "-o", "pipefail", "-c", script])
        assert bash_printf(outer) == words
        assert not marker.exists()

    @pytest.mark.parametrize("bad", [[], ["a\0b"]])
    def test_rejects(self, bad: list[str]) -> None:
        with pytest.raises(ValueError):
            quote_argv(bad)

    def test_rejects_non_str(self) -> None:
        with pytest.raises(TypeError):
            quote_argv(["rbd", 3])  # type: ignore[list-item]

    def test_plain_words_stay_readable(self) -> None:
        assert quote_argv(["rbd", "--pool=rbd", "ls"]) == "rbd --pool=rbd ls"


class TestInCreationOrder:
    def test_by_snapshot_id_not_by_name_or_listed_order(self) -> None:
        entries = [
            {"name": "backup;daily;30;2026-12-03T09:00:00.000000", "id": 8},  # 2.x, local time
            {"name": "backup;hourly;24;2026-12-03T08:10:00.000000", "id": 12},
            {"name": "zz-manual", "id": 3},
        ]
        assert [e["name"] for e in in_creation_order(entries)] == [
            "zz-manual",
            "backup;daily;30;2026-12-03T09:00:00.000000",
            "backup;hourly;24;2026-12-03T08:10:00.000000",
        ]

    def test_other_id_key_and_no_id_keeps_the_listed_order(self) -> None:
        assert in_creation_order([{"s": "b", "snapshot_id": 2}, {"s": "a", "snapshot_id": 1}], "snapshot_id") == [
            {"s": "a", "snapshot_id": 1},
            {"s": "b", "snapshot_id": 2},
        ]
        listed = [{"name": "b"}, {"name": "a", "id": 1}]
        assert in_creation_order(listed) == listed


class TestImageSpec:
    def test_parse_and_str(self) -> None:
        spec = ImageSpec.parse("rbd/ns/img;x;None@backup;daily;3;2026-01-01T00:00:00")
        assert (spec.pool, spec.namespace, spec.image, spec.snap) == (
            "rbd",
            "ns",
            "img;x;None",
            "backup;daily;3;2026-01-01T00:00:00",
        )
        assert str(spec) == "rbd/ns/img;x;None@backup;daily;3;2026-01-01T00:00:00"
        assert str(ImageSpec.parse("rbd/img")) == "rbd/img"
        assert ImageSpec.parse("rbd/img").namespace is None

    def test_options_use_equals_form(self) -> None:
        spec = ImageSpec("rbd", "ns", "-leading", "-snap")
        assert spec.options() == ["--pool=rbd", "--namespace=ns", "--image=-leading", "--snap=-snap"]
        assert spec.options(with_snap=False) == ["--pool=rbd", "--namespace=ns", "--image=-leading"]
        assert ImageSpec("rbd", "", "i").options() == ["--pool=rbd", "--image=i"]

    @pytest.mark.parametrize("text", ["img", "a/b/c/d", "rbd/"])
    def test_parse_rejects(self, text: str) -> None:
        with pytest.raises(ValueError):
            ImageSpec.parse(text)

    @pytest.mark.parametrize("image", ["a/b", "a@b", "", "a\0b"])
    def test_unaddressable_names(self, image: str) -> None:
        with pytest.raises(ValueError):
            ImageSpec("rbd", None, image)

    def test_at(self) -> None:
        assert str(ImageSpec("rbd", None, "i").at("s")) == "rbd/i@s"
        assert ImageSpec("rbd", None, "i", "s").at(None).snap is None


class TestCephAccess:
    def test_minimal(self) -> None:
        assert CephAccess().rbd_argv("ls") == ["rbd", "--cluster", "ceph", "--id", "admin", "ls"]

    def test_full(self) -> None:
        access = CephAccess("backup", "backurne", "/k/ring", "/c/ceph.conf")
        assert access.rbd_argv("ls", "-l") == [
            "rbd",
            "--cluster",
            "backup",
            "--id",
            "backurne",
            "--keyring",
            "/k/ring",
            "-c",
            "/c/ceph.conf",
            "ls",
            "-l",
        ]
        assert access.rados_argv("lspools")[0] == "rados"


class TestSshTarget:
    def test_argv(self, tmp_path: Path) -> None:
        target = SshTarget(
            "127.0.0.11",
            port=2222,
            identity_file="/lab/ssh/id_ed25519",
            known_hosts_file="/lab/ssh/known_hosts",
            cipher="aes128-gcm@openssh.com",
            control_dir=str(tmp_path / "cp"),
            extra_options=("Compression=no",),
        )
        argv = target.argv("rbd ls")
        assert argv[0] == "ssh"
        assert argv[-3:] == ["root@127.0.0.11", "--", "rbd ls"]
        joined = " ".join(argv)
        for expected in (
            "-o BatchMode=yes",
            "-o ConnectTimeout=10",
            "-o ServerAliveInterval=15",
            "-p 2222",
            "-i /lab/ssh/id_ed25519",
            "-o UserKnownHostsFile=/lab/ssh/known_hosts",
            "-o StrictHostKeyChecking=yes",
            "-c aes128-gcm@openssh.com",
            "-o ControlMaster=auto",
            f"-o ControlPath={tmp_path / 'cp'}/%C",
            "-o ControlPersist=60",
            "-o Compression=no",
        ):
            assert expected in joined
        mode = stat.S_IMODE(os.stat(tmp_path / "cp").st_mode)
        assert mode == 0o700
        assert target.label == "root@127.0.0.11:2222"

    def test_no_control_master_no_strict_without_known_hosts(self) -> None:
        argv = SshTarget("h", control_master=False).argv("true")
        joined = " ".join(argv)
        assert "ControlPath=none" in joined and "ControlMaster=no" in joined
        assert "StrictHostKeyChecking" not in joined and "-i" not in argv and "-c" not in argv

    def test_odd_paths_are_escaped(self, tmp_path: Path) -> None:
        target = SshTarget("h", known_hosts_file="/a dir/k%h", control_dir=str(tmp_path / "c p%d"))
        argv = target.argv("true")
        assert 'UserKnownHostsFile="/a dir/k%%h"' in argv
        assert f'ControlPath="{tmp_path}/c p%%d/%C"' in argv

    def test_control_dir_tilde_is_expanded(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        argv = SshTarget("h").argv("true")
        assert f"ControlPath={tmp_path}/.ansible/cp-backurne/%C" in argv
        assert (tmp_path / ".ansible" / "cp-backurne").is_dir()

    @pytest.mark.parametrize("host", ["", "-oProxyCommand=x", "a b", "u@h"])
    def test_bad_host(self, host: str) -> None:
        with pytest.raises(ValueError):
            SshTarget(host)

    def test_remote_command_survives_ssh_like_shell(self, tmp_path: Path) -> None:
        # What the remote sshd does with the last word: `$SHELL -c WORD`.
        marker = tmp_path / "pwned"
        words = hostile_words(marker)
        runner = RbdRunner(CephAccess(), SshTarget("h", control_master=False))
        argv = runner.remote_shell_argv([["printf", "%s\\0", *words], ["cat"]])
        assert argv[:1] == ["ssh"] and argv[-3:-1] == ["root@h", "--"]
        assert bash_printf(argv[-1]) == words
        assert not marker.exists()


class TestStderrCause:
    def test_prefers_error_line_and_strips_ceph_prefix(self) -> None:
        stderr = "\n".join(
            [
                "did not load config file, using default settings.",
                "2026-11-29T21:29:50.852+0000 7f1828c8f380 -1 librbd::image::OpenRequest: failed to stat id: (2)",
                "rbd: error opening image x: (2) No such file or directory",
                "",
            ]
        )
        assert stderr_cause(stderr) == "rbd: error opening image x: (2) No such file or directory"
        assert stderr_cause("") == ""
        assert stderr_cause("progress 10%\nall fine") == "all fine"

    def test_a_killed_pipeline_member_over_the_done_ones(self) -> None:
        stderr = "bash: line 1: 25675 Killed                  rbd export-diff x\n     25676 Done   | zstd -q\n"
        assert stderr_cause(stderr) == "bash: line 1: 25675 Killed                  rbd export-diff x"


FAKE_RBD = r"""#!{python}
import json, os, sys, time
args = sys.argv[1:]
log = os.environ.get("FAKE_RBD_LOG")
if log:
    with open(log, "a") as fh:
        fh.write(json.dumps(args) + "\n")
mode = os.environ.get("FAKE_RBD_MODE", "ok")
if mode == "sleep":
    time.sleep(30)
if mode == "fail":
    sys.stderr.write("2026-11-29T21:29:50.852+0000 7f1828c8f380 -1 noise\n")
    sys.stderr.write("rbd: error opening image x: (2) No such file or directory\n")
    sys.exit(2)
if mode == "ls-partial":
    a, b = {{"image": "a"}}, {{"image": "b c"}}
    print(json.dumps([a, dict(a, snapshot="s1"), dict(a, snapshot="s2"), b]))
    sys.stderr.write("rbd: error opening gone: (2) No such file or directory\n")
    sys.exit(1)
if mode == "garbage":
    print("not json")
    sys.exit(0)
if "ls" in args:
    print(json.dumps([{{"image": "a"}}, {{"image": "a", "snapshot": "s1"}}, {{"image": "-x"}}]))
elif "info" in args:
    print(json.dumps({{"id": "abc", "name": "x"}}))
elif "export" in args:
    sys.stdout.write("payload of " + [a for a in args if a.startswith("--image=")][0])
"""


@pytest.fixture
def fake_rbd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "rbd"
    script.write_text(FAKE_RBD.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_RBD_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


# The runner checks that its keyring and conf files exist before any command: real (empty) files.
_ACCESS_DIR = Path(tempfile.mkdtemp(prefix="backurne-test-rbd-"))
atexit.register(shutil.rmtree, _ACCESS_DIR, True)  # made at import, so no fixture can remove it
KEYRING, CONF = str(_ACCESS_DIR / "k"), str(_ACCESS_DIR / "c")
for _path in (KEYRING, CONF):
    Path(_path).write_text("")


class TestRunner:
    access = CephAccess("ceph", "backurne", KEYRING, CONF)

    def test_run_builds_argv(self, fake_rbd: Path) -> None:
        runner = RbdRunner(self.access)
        runner.snap_create("rbd/ns/-leading@-snap;x")
        runner.snap_remove(ImageSpec("rbd", None, "i m", "s"))
        runner.create("rbd/ns/new", 1 << 20)
        runner.resize("rbd/ns/new", 0, allow_shrink=True)
        runner.remove("rbd/ns/new")
        common = ["--cluster", "ceph", "--id", "backurne", "--keyring", KEYRING, "-c", CONF]
        assert calls(fake_rbd) == [
            [
                *common,
                "snap",
                "create",
                "--no-progress",
                "--pool=rbd",
                "--namespace=ns",
                "--image=-leading",
                "--snap=-snap;x",
            ],
            [*common, "snap", "rm", "--no-progress", "--pool=rbd", "--image=i m", "--snap=s"],
            [*common, "create", "--size=1048576B", "--pool=rbd", "--namespace=ns", "--image=new"],
            [
                *common,
                "resize",
                "--no-progress",
                "--size=0B",
                "--allow-shrink",
                "--pool=rbd",
                "--namespace=ns",
                "--image=new",
            ],
            [*common, "rm", "--no-progress", "--pool=rbd", "--namespace=ns", "--image=new"],
        ]

    def test_snap_ops_need_a_snapshot(self, fake_rbd: Path) -> None:
        with pytest.raises(ValueError):
            RbdRunner(self.access).snap_create("rbd/img")

    def test_list_images(self, fake_rbd: Path) -> None:
        assert RbdRunner(self.access).list_images("rbd", "ns") == {"a": ["s1"], "-x": []}
        assert calls(fake_rbd)[0][-4:] == ["ls", "--long", "--pool=rbd", "--namespace=ns", "--format=json"][-4:]

    def test_list_images_tolerates_concurrent_deletion(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "ls-partial")
        assert RbdRunner(self.access).list_images("rbd") == {"a": ["s1", "s2"], "b c": []}

    def test_list_images_real_failure_raises(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "fail")
        with pytest.raises(RbdError):
            RbdRunner(self.access).list_images("rbd")

    def test_error_message(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "fail")
        runner = RbdRunner(self.access, label="backup node 127.0.0.12")
        with pytest.raises(RbdError) as info:
            runner.snap_create("rbd/ns/img@s1")
        exc = info.value
        assert str(exc) == (
            "rbd snap create rbd/ns/img@s1 on backup node 127.0.0.12: "
            "rbd: error opening image x: (2) No such file or directory"
        )
        assert "\n" not in str(exc)
        assert exc.rc == 2 and exc.target == "backup node 127.0.0.12" and exc.is_not_found
        assert exc.argv[0] == "rbd"

    def test_exists(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        runner = RbdRunner(self.access)
        assert runner.exists("rbd/a")
        monkeypatch.setenv("FAKE_RBD_MODE", "fail")
        assert not runner.exists("rbd/a")

    def test_timeout(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "sleep")
        with pytest.raises(RbdError) as info:
            RbdRunner(self.access, default_timeout=0.5).run(["ls"])
        assert info.value.rc is None
        assert "timed out after 0.5 s" in str(info.value)

    def test_bad_json(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "garbage")
        with pytest.raises(RbdError, match="unparsable JSON"):
            RbdRunner(self.access).image_info("rbd/a")

    def test_missing_binary(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(RbdError, match="cannot run rbd"):
            RbdRunner(self.access).run(["ls"])

    def test_local_pipeline_checks_every_stage(self) -> None:
        runner = RbdRunner(self.access)
        assert runner.run_pipeline([["printf", "abc"], ["cat"]], timeout=10, action="t") == "abc"
        with pytest.raises(RbdError):
            # The first stage fails, the last succeeds: pipefail must still report it.
            runner.run_pipeline([["false"], ["cat"]], timeout=10, action="t")

    def test_pipeline_timeout_ends_the_whole_pipeline(self) -> None:
        started = time.monotonic()
        with pytest.raises(RbdError, match=r"timed out after 0\.5 s"):
            RbdRunner(self.access).run_pipeline([["sleep", "31.7"], ["cat"]], timeout=0.5, action="t")
        assert time.monotonic() - started < 5
        time.sleep(0.2)
        leftovers = subprocess.run(
            ["pgrep", "-f", "sleep 31.7"], capture_output=True, text=True, check=False
        ).stdout.split()
        assert leftovers == []

    def test_remote_runner_wraps_in_ssh(self, tmp_path: Path) -> None:
        runner = RbdRunner(self.access, SshTarget("10.0.0.1", control_dir=str(tmp_path)))
        argv = runner.command_argv(self.access.rbd_argv("info", "--image=a b"))
        assert argv[0] == "ssh" and argv[-1].startswith("rbd --cluster ceph")
        assert argv[-1].endswith("'--image=a b'")
        assert runner.label == "node 10.0.0.1" and runner.is_remote


class TestChecksumWithFakeRbd:
    access = CephAccess("ceph", "backurne")

    def test_hash_is_first_word_of_hasher_output(self, fake_rbd: Path) -> None:
        digest = snapshot_checksum(RbdRunner(self.access), "rbd", "ns", "-img", "s", hasher=("md5sum",))
        assert digest == hashlib.md5(b"payload of --image=-img").hexdigest()
        export = calls(fake_rbd)[0]
        words = ["export", "--no-progress", "--pool=rbd", "--namespace=ns", "--image=-img", "--snap=s", "--path=-"]
        assert export[-len(words) :] == words

    def test_failed_export_is_an_error_not_a_hash(self, fake_rbd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_RBD_MODE", "fail")
        with pytest.raises(RbdError, match=r"checksum of rbd/img@s on local: .*\(2\)"):
            snapshot_checksum(RbdRunner(self.access), "rbd", None, "img", "s")

    def test_compare(self, fake_rbd: Path) -> None:
        runner = RbdRunner(self.access)
        same = compare_snapshot(runner, runner, "rbd/a", "rbd/a", "s", ("md5sum",))
        assert same.match and same.error is None and same.live == same.backup
        differ = compare_snapshot(runner, runner, "rbd/a", "rbd/b", "s", ("md5sum",))
        assert not differ.match and "checksums differ" in (differ.error or "")
        assert differ.to_dict()["image"] == "rbd/a"


class TestLockIds:
    now = datetime(2026, 11, 29, 21, 0, 0, tzinfo=UTC)

    def test_round_trip(self) -> None:
        lock_id = make_lock_id(self.now, hostname="bk1", pid=42)
        assert lock_id == "backurne;bk1;42;2026-11-29T21:00:00"
        assert parse_lock_id(lock_id) == ("bk1", 42, self.now)
        assert make_lock_id(self.now.replace(tzinfo=None), hostname="bk1", pid=42) == lock_id

    @pytest.mark.parametrize(
        "lock_id", ["other", "backurne;h;x;2026-11-29T21:00:00", "backurne;h;1;yesterday", "a;b;1;c"]
    )
    def test_foreign(self, lock_id: str) -> None:
        assert parse_lock_id(lock_id) is None
        assert stale_reason(lock_id, timedelta(0), self.now + timedelta(days=999)) is None

    def test_stale_by_age(self) -> None:
        lock_id = make_lock_id(self.now, hostname="elsewhere", pid=1)
        assert stale_reason(lock_id, timedelta(hours=1), self.now + timedelta(minutes=59)) is None
        assert "ttl" in (stale_reason(lock_id, timedelta(hours=1), self.now + timedelta(minutes=61)) or "")

    def test_stale_by_dead_pid_only_on_this_host(self) -> None:
        child = subprocess.Popen(["true"])
        child.wait()
        here = make_lock_id(self.now, pid=child.pid)
        assert "is gone" in (stale_reason(here, timedelta(hours=1), self.now) or "")
        alive = make_lock_id(self.now, pid=os.getpid())
        assert stale_reason(alive, timedelta(hours=1), self.now) is None
        there = make_lock_id(self.now, hostname=socket.gethostname() + "-other", pid=child.pid)
        assert stale_reason(there, timedelta(hours=1), self.now) is None


class TestAccessFiles:
    """A keyring or conf path that cannot be used is named, with its option and whose it is,
    before any command runs (the CLI would say "(2) No such file or directory")."""

    def test_missing_keyring_named_before_any_command(self, fake_rbd: Path, tmp_path: Path) -> None:
        missing = str(tmp_path / "nope.keyring")
        runner = RbdRunner(CephAccess("ceph", "backurne", missing, CONF, owner="the backup node"))
        with pytest.raises(RbdError) as info:
            runner.list_images("rbd")
        assert f"keyring {missing} (option keyring of the backup node) does not exist" in str(info.value)
        # Not mistaken for a missing image by the callers that ask is_not_found.
        assert not info.value.is_not_found
        assert not fake_rbd.exists()  # rbd never ran
        with pytest.raises(RbdError, match="option keyring of the backup node"):
            runner.exists("rbd/img")

    def test_conf_that_is_a_directory(self, fake_rbd: Path, tmp_path: Path) -> None:
        runner = RbdRunner(CephAccess("ceph", "backurne", KEYRING, str(tmp_path), owner="live cluster prod"))
        with pytest.raises(RbdError, match=r"ceph_conf .* \(option ceph_conf of live cluster prod\) is a directory"):
            runner.run(["ls"])
        assert runner.rados_session() is None

    def test_remote_files_are_not_checked_here(self, tmp_path: Path) -> None:
        remote = RbdRunner(CephAccess(keyring="/only/on/the/live/node"), SshTarget("h", control_dir=str(tmp_path)))
        assert remote.file_problem() is None

    def test_remote_keyring_error_names_the_option(self) -> None:
        stderr = (
            "2026-12-03T08:27:20.281+0000 7f48661c6380 -1 auth: unable to find a keyring on /etc/x.keyring: "
            "(2) No such file or directory\nrbd: listing images failed: (2) No such file or directory\n"
        )
        runner = RbdRunner(CephAccess(keyring="/etc/x.keyring", owner="live cluster prod"), label="node n1")
        assert runner._access_cause(stderr) == (
            "keyring /etc/x.keyring (option keyring of live cluster prod) cannot be read on node n1"
        )
        conf = "global_init: unable to open config file from search list /etc/y.conf\n"
        assert "ceph_conf /etc/y.conf (option ceph_conf" in (runner._access_cause(conf) or "")
        assert runner._access_cause("rbd: error opening image x: (2) No such file or directory") is None
