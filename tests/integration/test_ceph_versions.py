"""What differs between Ceph versions, on real clusters of those versions.

The lab runs each cluster on the Ceph version asked for (BACKURNE_LAB_CEPH_LIVE / _BACKUP: 16,
the host's packages, or 18 / 20 in a chroot where that cluster's node runs too); `make
compat-ceph` runs this file with the core integration tests on live 18 -> backup 16 and live
20 -> backup 18. With the default lab (16 -> 16) it checks the same things on Pacific alone.
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import CLUSTERS, POOL, Lab
from test_rados_direct import NODE_PYTHON, listings

MiB = 1024 * 1024


def node(lab: Lab, cluster: str, *argv: str, input: bytes | None = None) -> bytes:
    """Run argv on that cluster's node over ssh (its sshd, its tools, its CEPH_CONF)."""
    result = lab.pipeline([*lab.ssh_argv(cluster), shlex.join(argv)], input=input, timeout=120).check()
    return result.stdout


def test_each_node_runs_its_clusters_ceph_version(lab: Lab) -> None:
    for cluster in CLUSTERS:
        version = lab.ceph_version(cluster)
        # the daemons of the cluster ...
        daemons = json.loads(lab.ceph(cluster, "versions", "--format", "json"))["overall"]
        assert daemons and all(v.startswith(f"ceph version {version}.") for v in daemons), (cluster, daemons)
        # ... and the tools and python3-rados/rbd its node runs the modules with
        assert node(lab, cluster, "rbd", "--version").decode().startswith(f"ceph version {version}."), cluster
        probe = "import rados, rbd, sys; print(sys.version_info[0], sys.version_info[1], rbd.__file__)"
        major, minor, module = node(lab, cluster, NODE_PYTHON, "-c", probe).decode().split()
        assert (int(major), int(minor)) >= (3, 9), (cluster, major, minor)
        assert module.startswith("/usr/lib/python3/dist-packages/"), (cluster, module)


def make_image_with_two_snapshots(lab: Lab, cluster: str, spec: str) -> None:
    lab.write_image(cluster, spec, 8, seed=14, admin=True)
    lab.rbd(cluster, "snap", "create", "--no-progress", f"{spec}@s1", admin=True)
    lab.overwrite(cluster, spec, 0.2, seed=15, admin=True)
    lab.rbd(cluster, "snap", "create", "--no-progress", f"{spec}@s2", admin=True)


def export_diffs(lab: Lab, cluster: str, spec: str) -> tuple[bytes, bytes]:
    """(s1 full, s1 -> s2) diff streams written by that cluster's node's rbd."""
    full = node(lab, cluster, "rbd", "--id", "backurne", "export-diff", "--no-progress", f"{spec}@s1", "-")
    incremental = node(
        lab, cluster, "rbd", "--id", "backurne", "export-diff", "--no-progress", "--from-snap", "s1", f"{spec}@s2", "-"
    )
    return full, incremental


def import_diffs(lab: Lab, cluster: str, spec: str, streams: tuple[bytes, bytes]) -> None:
    lab.rbd(cluster, "create", "--size", "1M", spec, admin=True)
    for stream in streams:
        node(lab, cluster, "rbd", "--id", "backurne", "import-diff", "--no-progress", "-", spec, input=stream)


def test_export_diff_streams_cross_versions_both_ways(lab: Lab, ns: str) -> None:
    source = f"{POOL}/{ns}/img"
    make_image_with_two_snapshots(lab, "live", source)
    live_streams = export_diffs(lab, "live", source)
    # the same snapshot pair exported by the host's rbd (16): the v1 stream is byte-identical
    host_full = lab.rbd_argv("live", "export-diff", "--no-progress", f"{source}@s1", "-")
    assert lab.pipeline(host_full).check().stdout == live_streams[0]

    copy = f"{POOL}/{ns}/copy"
    import_diffs(lab, "backup", copy, live_streams)
    for snap in ("s1", "s2"):
        assert lab.checksum("backup", f"{copy}@{snap}") == lab.checksum("live", f"{source}@{snap}"), snap

    # and back: the backup node's streams into the live cluster (a restore's direction)
    back = f"{POOL}/{ns}/back"
    backup_streams = export_diffs(lab, "backup", copy)
    assert backup_streams == live_streams
    import_diffs(lab, "live", back, backup_streams)
    for snap in ("s1", "s2"):
        assert lab.checksum("live", f"{back}@{snap}") == lab.checksum("live", f"{source}@{snap}"), snap


DIRECTORY_ENTRY = r"""
import sys
import rados
namespace, key, mode = sys.argv[1:4]
client = rados.Rados(conffile="", name="client.admin")
client.connect(timeout=30)
ioctx = client.open_ioctx("rbd")
ioctx.set_namespace(namespace)
with rados.ReadOpCtx() as op:
    found, _ = ioctx.get_omap_vals_by_keys(op, (key,))
    ioctx.operate_read_op(op, "rbd_directory")
    value = dict(found)[key]
if mode != "read":
    value = bytes.fromhex(mode)
    with rados.WriteOpCtx() as op:
        ioctx.set_omap(op, (key,), (value,))
        ioctx.operate_write_op(op, "rbd_directory")
print(value.hex())
client.shutdown()
"""


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_unknown_directory_encoding_falls_back_to_that_versions_cli(lab: Lab, ns: str, cluster: str) -> None:
    # A directory entry with a field appended after the image id (as a newer Ceph could write):
    # that version's librbd still reads it, the in-process reader does not know it. The listing
    # must then come from that version's `rbd ls -l`, complete and in creation order.
    where = f"{POOL}/{ns}"
    lab.rbd(cluster, "create", "--size", "1M", f"{where}/plain", admin=True)
    lab.rbd(cluster, "create", "--size", "1M", f"{where}/odd", admin=True)
    for snap in ("backup;daily;7;2026-01-02T00:00:00", "backup;daily;7;2026-01-01T00:00:00"):
        lab.rbd(cluster, "snap", "create", "--no-progress", f"{where}/odd@{snap}", admin=True)
    expected = {"plain": [], "odd": ["backup;daily;7;2026-01-02T00:00:00", "backup;daily;7;2026-01-01T00:00:00"]}
    before = listings(lab, cluster, ns)
    assert (before["fast_by"], before["fast"], before["cli"]) == ("rados", expected, expected), before

    original = node(lab, cluster, NODE_PYTHON, "-c", DIRECTORY_ENTRY, ns, "name_odd", "read").decode().strip()
    node(lab, cluster, NODE_PYTHON, "-c", DIRECTORY_ENTRY, ns, "name_odd", original + "00")
    try:
        after = listings(lab, cluster, ns)
        assert after["fast_by"] == "rbd", after
        assert after["fast"] == after["cli"] == expected, after
    finally:
        node(lab, cluster, NODE_PYTHON, "-c", DIRECTORY_ENTRY, ns, "name_odd", original)
    assert listings(lab, cluster, ns)["fast_by"] == "rados"
