# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The `backurne` CLI and file-level access against the real lab: filesystems made here are
# imported on the live cluster, backed up onto the backup cluster with the transfer core, then
# listed, mapped (clone v2 + rbd-fuse + read-only loop devices: the lab kernel has no NBD),
# read back, extracted and unmapped through the CLI, run as a separate process the way an
# operator runs it.
import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backurne_browse.mapping import (
    CLONE_PREFIX,
    Mapper,
    MappingError,
    mounted_paths,
)
from backurne_core.ceph.rbd import CephAccess, ImageSpec, RbdRunner, SshTarget
from backurne_core.stream.transfer import transfer_snapshot

REPO = Path(__file__).resolve().parents[2]
POOL = "rbd"
CLUSTER = "lab"
MiB = 1 << 20
SNAP = f"backup;daily;30;{datetime.now(UTC).replace(tzinfo=None).isoformat(timespec='microseconds')}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mapping needs root (loop devices, mounts)")


@dataclass
class Setup:
    ns: str
    config: Path
    state_dir: Path
    src: Path  # the tree inside the ext4 image `web`
    part_files: dict[str, bytes]  # file name -> content, per partition name
    env: dict[str, str]


def sh(*argv: str, timeout: float = 120) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout).stdout


def write_mbr(disk: Path, partitions: list[tuple[int, int]]) -> None:
    """A DOS partition table with Linux partitions at (start sector, sectors)."""
    table = bytearray(512)
    for index, (start, sectors) in enumerate(partitions):
        entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
        table[446 + 16 * index : 462 + 16 * index] = entry
    table[510:512] = b"\x55\xaa"
    with open(disk, "r+b") as stream:
        stream.write(table)


def make_images(tmp: Path) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """(ext4 image file, its source tree, partitioned disk file, partition file contents)."""
    src = tmp / "src"
    (src / "etc" / "deep").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("web1.example\n")
    (src / "etc" / "deep" / "blob.bin").write_bytes(os.urandom(300 * 1024))
    (src / "space name.txt").write_text("a name with a blank\n")
    (src / "inside").symlink_to("etc/hostname")
    (src / "escape-abs").symlink_to("/etc/passwd")
    (src / "escape-rel").symlink_to("../../../../../../../../etc/passwd")
    fs = tmp / "fs.img"
    sh("truncate", "-s", "32M", str(fs))
    sh("mkfs.ext4", "-q", "-F", "-d", str(src), str(fs))

    # p1: ext4 (24 MiB at 1 MiB), p2: xfs (300 MiB, its minimum size, at 26 MiB); sparse files.
    p1_src = tmp / "p1src"
    p1_src.mkdir()
    contents = {"p1": b"first partition\n", "p2": os.urandom(64 * 1024)}
    (p1_src / "p1.txt").write_bytes(contents["p1"])
    p1 = tmp / "p1.img"
    sh("truncate", "-s", "24M", str(p1))
    sh("mkfs.ext4", "-q", "-F", "-d", str(p1_src), str(p1))
    p2 = tmp / "p2.img"
    sh("truncate", "-s", "300M", str(p2))
    sh("mkfs.xfs", "-q", str(p2))
    mnt = tmp / "p2mnt"
    mnt.mkdir()
    sh("mount", "-o", "loop", str(p2), str(mnt))
    try:
        (mnt / "p2.bin").write_bytes(contents["p2"])
    finally:
        sh("umount", str(mnt))
    disk = tmp / "disk.img"
    sh("truncate", "-s", "330M", str(disk))
    write_mbr(disk, [(2048, 24 * 2048), (26 * 2048, 300 * 2048)])
    for part, start in ((p1, 1), (p2, 26)):
        sh("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start}", "conv=notrunc,sparse", "status=none")
    return fs, src, disk, contents


@pytest.fixture(scope="module")
def setup(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("cli")
    ns = f"t-{uuid.uuid4().hex[:8]}"
    for cluster in ("live", "backup"):
        lab.rbd(cluster, "namespace", "create", f"{POOL}/{ns}", admin=True)
    state_dir = tmp / "state"
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    try:
        # The configuration an operator would get from the lab helper, with a private state dir.
        text = sh("bash", str(REPO / "scripts" / "lab-cli-config.sh"), ns)
        document = json.loads(text.split("\n", 1)[1])
        assert document["backup"]["namespace"] == ns
        document["state_dir"] = str(state_dir)
        config = tmp / "backurne.yml"
        config.write_text(json.dumps(document))

        fs, src, disk, contents = make_images(tmp)
        control_dir = tmp_path_factory.mktemp("cp")
        target = SshTarget(
            lab.live_ip,
            port=lab.port,
            identity_file=str(lab.ssh_key),
            known_hosts_file=str(lab.known_hosts),
            control_dir=str(control_dir),
        )
        live = RbdRunner(CephAccess(ceph_client="backurne", ceph_conf=str(lab.live_conf)), target)
        backup = RbdRunner(CephAccess(ceph_client="backurne", ceph_conf=str(lab.backup_conf)))
        # `web` the way production makes it: live image, snapshot, transfer to the backup pool.
        lab.rbd("live", "import", "--no-progress", str(fs), f"{POOL}/{ns}/web", timeout=120)
        live.snap_create(ImageSpec(POOL, ns, "web", SNAP))
        result = transfer_snapshot(live, backup, POOL, ns, "web", SNAP, None, POOL, ns, f"{CLUSTER};web;None")
        assert result.ok, result
        subprocess.run(target.exit_master_argv(), capture_output=True, timeout=30, check=False)
        # The others straight into the backup pool (the transfer is not what they test).
        for image, source in (("parted", disk), ("gone", fs)):
            dest = ImageSpec(POOL, ns, f"{CLUSTER};{image};None")
            lab.rbd("backup", "import", "--no-progress", str(source), str(dest), timeout=120)
            backup.snap_create(dest.at(SNAP))
        # Things the listing must leave out or report as foreign.
        lab.rbd("backup", "create", "--size", "1M", f"{POOL}/{ns}/not-a-backup")
        lab.rbd("backup", "snap", "create", f"{POOL}/{ns}/{CLUSTER};web;None@manual")
        yield Setup(ns, config, state_dir, src, contents, env)
    finally:
        # Whatever a failed test left mapped, so that the namespace can go.
        if state_dir.exists():
            subprocess.run(
                [sys.executable, "-m", "backurne_cli.main", "--config", str(tmp / "backurne.yml"), "unmap", "--all"],
                env=env,
                capture_output=True,
                timeout=300,
                check=False,
            )
        with ThreadPoolExecutor(max_workers=2) as pool:  # both clusters at once
            for future in [pool.submit(lab.purge_namespace, cluster, ns) for cluster in ("live", "backup")]:
                future.result()


def cli(setup: Setup, *args: str, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "backurne_cli.main", "--config", str(setup.config), *args],
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if ok:
        assert done.returncode == 0, f"backurne {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done


def cli_json(setup: Setup, *args: str) -> Any:
    return json.loads(cli(setup, *args, "--json").stdout)


def backup_spec(setup: Setup, image: str, snap: str | None = SNAP) -> str:
    text = f"{POOL}/{setup.ns}/{CLUSTER};{image};None"
    return f"{text}@{snap}" if snap else text


def assert_nothing_left(lab: Any, setup: Setup) -> None:
    """No clone, loop device, mount (filesystem or rbd-fuse) or record left by a mapping."""
    images = lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", setup.ns)
    assert not [name for name in images if name.startswith(CLONE_PREFIX)], images
    loops = json.loads(sh("losetup", "--json", "--list") or '{"loopdevices": []}')["loopdevices"]
    leftover = [loop for loop in loops if str(loop.get("back-file", "")).startswith(str(setup.state_dir))]
    assert leftover == []
    assert [path for path in mounted_paths() if path.startswith(str(setup.state_dir))] == []
    mappings = setup.state_dir / "mappings"
    assert not mappings.exists() or not [p for p in mappings.iterdir() if not p.name.endswith(".lock")]
    assert cli_json(setup, "list-mapped") == []


def tree(root: Path) -> dict[str, Any]:
    """path -> bytes (file) or ('link', target), for every entry under root."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def test_ls_json_matches_the_backup_pool(lab: Any, setup: Setup) -> None:
    listed = cli_json(setup, "ls")
    real = lab.rbd_json("backup", "ls", "--long", "--pool", POOL, "--namespace", setup.ns)
    heads = {entry["image"]: entry["size"] for entry in real if "snapshot" not in entry}
    backups = sorted(name for name in heads if name.count(";") == 2)
    assert [d["image"] for d in listed] == backups == [f"{CLUSTER};{i};None" for i in ("gone", "parted", "web")]
    for disk in listed:
        assert disk["size"] == heads[disk["image"]]
        assert (disk["ident"], disk["comment"]) == (CLUSTER, "None")
        assert disk["disk"] == disk["image"].split(";")[1]
        assert disk["snapshot_count"] == 1 and disk["newest_snapshot"] == SNAP
    web = cli_json(setup, "ls", "web")
    snaps = lab.rbd_json("backup", "snap", "ls", backup_spec(setup, "web", None))
    assert sorted(s["name"] for s in snaps) == sorted([SNAP, "manual"])
    assert [s["name"] for s in web["snapshots"]] == [SNAP]
    assert web["foreign_snapshots"] == ["manual"]
    assert web["snapshots"][0]["profile"] == "daily" and web["snapshots"][0]["count"] == 30
    assert web["snapshots"][0]["size"] == heads[f"{CLUSTER};web;None"]
    human = cli(setup, "ls").stdout
    assert "not-a-backup" not in human and "web" in human
    # stats (rbd du) and status (no transfer running here) through the same configuration.
    usage = cli_json(setup, "stats")
    assert [image["name"] for image in usage["images"]] == backups
    assert {image["name"]: image["provisioned"] for image in usage["images"]} == {name: heads[name] for name in backups}
    assert cli_json(setup, "status") == []


def test_map_reads_files_back_and_unmap_leaves_nothing(lab: Any, setup: Setup) -> None:
    before = lab.checksum("backup", backup_spec(setup, "web"))
    mapped = cli_json(setup, "map", "web", "latest")
    assert (mapped["image"], mapped["snapshot"], mapped["method"]) == (f"{CLUSTER};web;None", SNAP, "fuse")
    [fs] = mapped["filesystems"]
    assert (fs["name"], fs["fstype"], fs["error"]) == ("disk", "ext4", None)
    mountpoint = Path(fs["mountpoint"])
    # The files read back equal, symlinks as they were.
    assert tree(mountpoint) == tree(setup.src)
    assert len(tree(mountpoint)["etc/deep/blob.bin"]) == 300 * 1024
    # Read-only, no journal replay, nothing executable or device-like.
    mountinfo = {line.split()[4]: line.split()[5] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    options = mountinfo[str(mountpoint)]
    assert set(options.split(",")) >= {"ro", "nosuid", "nodev", "noexec"}
    with pytest.raises(OSError):
        (mountpoint / "new-file").write_text("x")
    # Another process sees it; mapping it again is harmless.
    assert [(m["image"], m["snapshot"]) for m in cli_json(setup, "list-mapped")] == [(f"{CLUSTER};web;None", SNAP)]
    again = cli(setup, "map", f"{CLUSTER};web;None", SNAP)
    assert "already mapped" in again.stderr and str(mountpoint) in again.stdout

    assert cli(setup, "unmap", "web", "latest").stdout.startswith(f"unmapped {CLUSTER};web;None @ {SNAP}")
    assert_nothing_left(lab, setup)
    assert lab.checksum("backup", backup_spec(setup, "web")) == before
    assert cli(setup, "unmap", "web", "latest").stdout == "nothing was mapped\n"


def test_partitions_ext4_and_xfs(lab: Any, setup: Setup) -> None:
    mapped = cli_json(setup, "map", "parted", SNAP[len("backup;daily;30;") :][:19])
    by_name = {fs["name"]: fs for fs in mapped["filesystems"]}
    assert sorted(by_name) == ["p1", "p2"]
    assert (by_name["p1"]["fstype"], by_name["p2"]["fstype"]) == ("ext4", "xfs")
    assert all(fs["error"] is None for fs in by_name.values())
    assert Path(by_name["p1"]["mountpoint"], "p1.txt").read_bytes() == setup.part_files["p1"]
    assert Path(by_name["p2"]["mountpoint"], "p2.bin").read_bytes() == setup.part_files["p2"]
    mountinfo = {line.split()[4]: line for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    assert "norecovery" in mountinfo[by_name["p2"]["mountpoint"]]
    # Extract with several filesystems: the first path component names the filesystem.
    dest = setup.state_dir.parent / "parted-out"
    dest.mkdir()
    copied = cli_json(setup, "extract", "parted", "latest", "p2/p2.bin", "--to", str(dest))
    assert copied["copied"][0]["filesystem"] == "p2"
    assert (dest / "p2.bin").read_bytes() == setup.part_files["p2"]
    refused = cli(setup, "extract", "parted", "latest", "p2.bin", "--to", str(dest), ok=False)
    assert refused.returncode == 1 and "must start with a filesystem name (p1, p2)" in refused.stderr
    cli(setup, "unmap", "parted", "latest")
    assert_nothing_left(lab, setup)


def test_extract_copies_and_refuses_traversal(lab: Any, setup: Setup) -> None:
    out = setup.state_dir.parent / "extract-out"
    out.mkdir()
    # Not mapped: extract maps for the copy and unmaps afterwards.
    done = cli_json(setup, "extract", "web", "latest", "etc", "space name.txt", "inside", "--to", str(out))
    assert [c["type"] for c in done["copied"]] == ["directory", "file", "file"]
    assert tree(out / "etc") == tree(setup.src / "etc")
    assert (out / "space name.txt").read_text() == "a name with a blank\n"
    assert (out / "hostname").read_text() == "web1.example\n"  # "inside" -> etc/hostname, inside the snapshot
    assert_nothing_left(lab, setup)

    cli(setup, "map", "web", "latest")
    try:
        empty = setup.state_dir.parent / "refused-out"
        empty.mkdir()
        for path, message in (
            ("../etc/passwd", "contains '..'"),
            ("/etc/passwd", "is absolute"),
            ("escape-abs", "leads outside the snapshot's filesystem"),
            ("escape-rel", "leads outside the snapshot's filesystem"),
        ):
            refused = cli(setup, "extract", "web", "latest", "etc/hostname", path, "--to", str(empty), ok=False)
            assert refused.returncode == 1, path
            assert message in refused.stderr and repr(path) in refused.stderr
            assert list(empty.iterdir()) == [], f"{path}: something was written"
    finally:
        cli(setup, "unmap", "web", "latest")
    assert_nothing_left(lab, setup)


def test_expiring_a_mapped_snapshot_loses_nothing(lab: Any, setup: Setup) -> None:
    """Retention removing a mapped snapshot (clone v2): the view stays intact until unmap."""
    mapped = cli_json(setup, "map", "gone", "latest")
    # Not read before the snapshot goes: its blocks come from Ceph afterwards, not from a cache.
    blob = Path(mapped["filesystems"][0]["mountpoint"], "etc", "deep", "blob.bin")
    # What retention runs, as the restricted backurne user: it succeeds...
    lab.rbd("backup", "snap", "rm", "--no-progress", backup_spec(setup, "gone"))
    assert cli_json(setup, "ls", "gone")["snapshots"] == []
    # ...but Ceph only moved the snapshot to the trash namespace: the mapped files are intact,
    assert blob.read_bytes() == (setup.src / "etc" / "deep" / "blob.bin").read_bytes()
    trashed = lab.rbd_json("backup", "snap", "ls", "--all", backup_spec(setup, "gone", None))
    assert [s["namespace"]["type"] for s in trashed] == ["trash"]
    # ...and the image itself cannot be removed while the clone exists.
    with pytest.raises(Exception, match=r"linked clones|has snapshots"):
        lab.rbd("backup", "rm", "--no-progress", backup_spec(setup, "gone", None))
    # unmap still finds it (from its record) and Ceph then drops the trashed snapshot.
    cli(setup, "unmap", "gone", "latest")
    assert_nothing_left(lab, setup)
    assert lab.rbd_json("backup", "snap", "ls", "--all", backup_spec(setup, "gone", None)) == []


def test_map_errors_name_image_and_snapshot(setup: Setup) -> None:
    missing = cli(setup, "map", "web", "2001-01-01", ok=False)
    assert missing.returncode == 1 and "no snapshot '2001-01-01' of 'lab;web;None'" in missing.stderr
    unknown = cli(setup, "map", "nosuchdisk", "latest", ok=False)
    assert unknown.returncode == 1 and "no backup image matches 'nosuchdisk'" in unknown.stderr
    assert shutil.which("rbd-fuse"), "rbd-fuse is needed by these tests (scripts/install-deps.sh)"


def test_a_failed_map_undoes_itself(lab: Any, setup: Setup) -> None:
    """rbd-nbd cannot map on the lab kernel (no NBD): the clone made before must go again."""
    backup = RbdRunner(CephAccess(ceph_client="backurne", ceph_conf=str(lab.backup_conf)))
    mapper = Mapper(backup, POOL, setup.ns, str(setup.state_dir), timeout=60, method="nbd")
    with pytest.raises(MappingError, match=r"snapshot '.*' of 'lab;web;None': rbd-nbd map failed"):
        mapper.map(f"{CLUSTER};web;None", SNAP)
    assert_nothing_left(lab, setup)
