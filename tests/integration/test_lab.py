"""First integration tests: the lab itself and backurne's data path.

live --(ssh: rbd export-diff | zstd -1)--> zstd -d | rbd import-diff (backup)
"""

from __future__ import annotations

import shlex
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.lab

MiB = 1024 * 1024


def transfer(lab, spec: str, snap: str, from_snap: str | None = None, timeout: float = 300):
    """Pull SPEC@SNAP from live into the same SPEC on backup, as backurne does.

    Runs on the "backup host" (here: locally with the backup conf):
      ssh live 'bash -o pipefail -c "rbd export-diff ... - | zstd -1"'
        | zstd -d | rbd import-diff - SPEC
    The remote rbd finds its cluster through CEPH_CONF (SetEnv in sshd).
    Returns the PipelineResult; every stage's return code is in it.
    """
    export = ["rbd", "--id", "backurne", "export-diff", "--no-progress"]
    if from_snap is not None:
        export += ["--from-snap", from_snap]
    export += [f"{spec}@{snap}", "-"]
    remote_pipe = f"{shlex.join(export)} | zstd -1 -q -c"
    remote = f"bash -o pipefail -c {shlex.quote(remote_pipe)}"
    return lab.pipeline(
        [*lab.ssh_argv("live"), remote],
        ["zstd", "-d", "-q", "-c"],
        lab.rbd_argv("backup", "import-diff", "--no-progress", "-", spec),
        timeout=timeout,
    )


def snap_names(lab, cluster: str, spec: str) -> list[str]:
    return [s["name"] for s in lab.rbd_json(cluster, "snap", "ls", spec)]


@pytest.mark.parametrize("cluster", ["live", "backup"])
def test_ssh_host_talks_to_its_cluster(lab, cluster):
    """Each sshd "host" exports CEPH_CONF of its own cluster to sessions."""
    conf = lab.ssh(cluster, 'printf %s "$CEPH_CONF"')
    assert conf == str(lab.conf(cluster))
    fsid_remote = lab.ssh(cluster, "ceph-conf --lookup fsid").strip()
    fsid_local = subprocess.run(
        ["ceph-conf", "-c", str(lab.conf(cluster)), "--lookup", "fsid"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert fsid_remote == fsid_local
    # the restricted user works remotely without -c
    lab.ssh(cluster, "rbd --id backurne ls rbd >/dev/null")


def test_write_image_is_deterministic(lab, ns):
    spec = f"rbd/{ns}/det"
    lab.write_image("live", spec, 2, seed=42)
    lab.write_image("backup", spec, 2, seed=42)
    assert lab.checksum("live", spec) == lab.checksum("backup", spec)
    assert int(lab.rbd_json("live", "info", spec)["size"]) == 2 * MiB


def test_full_and_incremental_transfer(lab, ns):
    img = f"rbd/{ns}/img"
    lab.write_image("live", img, 16, seed=1)
    lab.rbd("live", "snap", "create", f"{img}@s1")
    # import-diff needs an existing image: a 1 MiB placeholder is resized
    lab.rbd("backup", "create", "--size", "1M", img)

    transfer(lab, img, "s1").check()
    s1_live = lab.checksum("live", f"{img}@s1")
    assert lab.checksum("backup", f"{img}@s1") == s1_live
    assert int(lab.rbd_json("backup", "info", img)["size"]) == 16 * MiB
    assert snap_names(lab, "backup", img) == ["s1"]

    rewritten = lab.overwrite("live", img, fraction=0.10, seed=2)
    assert 1 * MiB < rewritten < 2 * MiB
    lab.rbd("live", "snap", "create", f"{img}@s2")

    transfer(lab, img, "s2", from_snap="s1").check()
    s2_live = lab.checksum("live", f"{img}@s2")
    assert s2_live != s1_live
    assert lab.checksum("backup", f"{img}@s2") == s2_live
    assert lab.checksum("backup", f"{img}@s1") == s1_live
    assert snap_names(lab, "backup", img) == ["s1", "s2"]


def test_missing_from_snap_fails_through_ssh(lab, ns):
    """export-diff fails remotely: pipefail must carry it through ssh."""
    img = f"rbd/{ns}/img"
    lab.write_image("live", img, 1, seed=5)
    lab.rbd("live", "snap", "create", f"{img}@s1")
    lab.rbd("backup", "create", "--size", "1M", img)
    res = transfer(lab, img, "s1", from_snap="does-not-exist")
    assert res.returncodes[0] != 0, res.describe()
    assert not res.ok
    assert snap_names(lab, "backup", img) == []


@pytest.mark.parametrize("cluster", ["live", "backup"])
def test_restricted_user_cannot_create_pool(lab, cluster):
    pool = f"forbidden-{uuid.uuid4().hex[:8]}"
    cp = subprocess.run(
        lab.ceph_argv(cluster, "osd", "pool", "create", pool, "8", admin=False),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 13, (cp.returncode, cp.stderr)  # EACCES
    assert "EACCES" in cp.stderr or "access denied" in cp.stderr
    assert pool not in lab.ceph(cluster, "osd", "pool", "ls").split()


def _corrupt(kind: str, stream: bytes) -> bytes:
    if kind == "truncated":
        return stream[: len(stream) // 2]
    if kind == "no-end-tag":
        assert stream.endswith(b"e")
        return stream[:-1]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return b"this is not an rbd diff\n" * 100
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "no-end-tag", "empty", "garbage"])
def test_import_diff_rejects_broken_stream(lab, ns, kind):
    """A broken diff must fail (non-zero) and must not create the snapshot.

    lab-facts gotcha 8: the safety property backurne relies on.
    """
    img = f"rbd/{ns}/img"
    lab.write_image("live", img, 4, seed=3)
    lab.rbd("live", "snap", "create", f"{img}@s1")
    stream = subprocess.run(
        lab.rbd_argv("live", "export-diff", "--no-progress", f"{img}@s1", "-"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert len(stream) > 4 * MiB
    lab.rbd("backup", "create", "--size", "1M", img)

    cp = subprocess.run(
        lab.rbd_argv("backup", "import-diff", "--no-progress", "-", img),
        input=_corrupt(kind, stream),
        capture_output=True,
        timeout=60,
    )
    assert cp.returncode != 0, cp.stderr
    assert snap_names(lab, "backup", img) == []

    # control: the intact stream imports and matches
    lab.rbd("backup", "import-diff", "--no-progress", "-", img, input=stream)
    assert snap_names(lab, "backup", img) == ["s1"]
    assert lab.checksum("backup", f"{img}@s1") == lab.checksum("live", f"{img}@s1")
