#!/usr/bin/python3
"""Create on a Ceph cluster the RBD images the stand-in PVE fixture names.

    /usr/bin/python3 tests/pveapi/lab_images.py --fixture FIXTURE --conf CEPH_CONF [--id admin]
    /usr/bin/python3 tests/pveapi/lab_images.py --fixture FIXTURE --list

Every volume of every guest config (qemu disks incl. cdrom/cloud-init,
efidisk0, tpmstate0, unusedN; LXC rootfs, mpN, unusedN) on a storage of type
``rbd`` becomes an image in that storage's pool (absent: ``rbd``) and
namespace (created when missing).  ``base-X/vm-Y`` linked clones become RBD
clones of ``base-X@__base__`` (protected), as PVE makes them.  Images that
exist are left alone (tests may have snapshots on them), so this is
idempotent; ``lab_images.fill_mib`` in the fixture says how many MiB of
deterministic data go into a freshly created image.

Runs with /usr/bin/python3 and python3-rbd/python3-rados (lab packages):
one process, one connection, instead of a dozen `rbd` CLI calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import DEFAULT_FIXTURE, parse_property_string, parse_size

MiB = 1024 * 1024
BASE_SNAP = "__base__"  # the snapshot PVE clones linked clones from
QEMU_VOLUME_KEY = re.compile(r"^((ide|sata|scsi|virtio|unused)\d+|efidisk0|tpmstate0)$")
LXC_VOLUME_KEY = re.compile(r"^(rootfs|(mp|unused)\d+)$")


def fixture_images(fixture: dict[str, Any]) -> list[dict[str, Any]]:
    """Every RBD image the fixture's guests name, bases before their clones.

    Items: storage, pool, namespace, image, size (bytes), parent (image or
    None), fill_mib, and where it is used (``users``: ["qemu/100:scsi0", ...]).
    """
    storages = {s["storage"]: s for s in fixture.get("storages", []) if s.get("type") == "rbd"}
    fill = fixture.get("lab_images", {}).get("fill_mib", {})
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for guest in fixture.get("guests", []):
        kind = guest["type"]
        key_re = QEMU_VOLUME_KEY if kind == "qemu" else LXC_VOLUME_KEY
        default_key = "file" if kind == "qemu" else "volume"
        for key, value in guest.get("config", {}).items():
            if not key_re.match(key) or not isinstance(value, str):
                continue
            opts = parse_property_string(value, default_key=default_key)
            volume = opts.get(default_key) or opts.get("file") or opts.get("volume") or ""
            storage, sep, volname = volume.partition(":")
            if not sep or storage not in storages:
                continue  # none, a path/bind mount, or a non-RBD storage
            parent = None
            if "/" in volname:  # linked clone: base-X-disk-N/vm-Y-disk-M
                parent, volname = volname.split("/", 1)
            if opts.get("size"):
                size = parse_size(opts["size"])
            else:
                size = 4 * MiB if volname.endswith("-cloudinit") else 32 * MiB
            st = storages[storage]
            entry = found.setdefault(
                (storage, volname),
                {
                    "storage": storage,
                    "pool": st.get("pool") or "rbd",
                    "namespace": st.get("namespace") or "",
                    "image": volname,
                    "size": size,
                    "parent": parent,
                    "fill_mib": int(fill.get(f"{storage}:{volname}", 0)),
                    "users": [],
                },
            )
            entry["size"] = max(entry["size"], size)
            entry["users"].append(f"{kind}/{guest['vmid']}:{key}")
    images = sorted(found.values(), key=lambda e: (e["parent"] is not None, e["storage"], e["image"]))
    names = {(e["storage"], e["image"]) for e in images}
    for e in images:
        if e["parent"] and (e["storage"], e["parent"]) not in names:
            raise ValueError(f"{e['storage']}:{e['parent']}/{e['image']}: the base image is not any guest's disk")
    return images


def fill_bytes(spec: str, index: int) -> bytes:
    return hashlib.shake_128(f"backurne-pve:{spec}:{index}".encode()).digest(MiB)


def create_images(fixture: dict[str, Any], conf: str, client: str) -> tuple[int, int]:
    import rados  # only the lab has python3-rados/python3-rbd
    import rbd

    images = fixture_images(fixture)
    created = 0
    cluster = rados.Rados(conffile=conf, name=f"client.{client}")
    cluster.connect(timeout=30)
    ioctxs: dict[tuple[str, str], Any] = {}
    api = rbd.RBD()
    try:

        def ioctx(pool: str, ns: str) -> Any:
            if (pool, ns) not in ioctxs:
                ctx = cluster.open_ioctx(pool)
                if ns:
                    if not api.namespace_exists(ctx, ns):
                        api.namespace_create(ctx, ns)
                    ctx.set_namespace(ns)
                ioctxs[(pool, ns)] = ctx
            return ioctxs[(pool, ns)]

        existing: dict[tuple[str, str], set[str]] = {}
        for e in images:
            where = (e["pool"], e["namespace"])
            ctx = ioctx(*where)
            if where not in existing:
                existing[where] = set(api.list(ctx))
            name = e["image"]
            spec = "/".join(p for p in (e["pool"], e["namespace"], name) if p)
            if name not in existing[where]:
                if e["parent"]:
                    with rbd.Image(ctx, e["parent"]) as base:
                        snaps = {s["name"] for s in base.list_snaps()}
                        if BASE_SNAP not in snaps:
                            base.create_snap(BASE_SNAP)
                        if not base.is_protected_snap(BASE_SNAP):
                            base.protect_snap(BASE_SNAP)
                    api.clone(ctx, e["parent"], BASE_SNAP, ctx, name)
                    with rbd.Image(ctx, name) as img:
                        if img.size() < e["size"]:
                            img.resize(e["size"])
                else:
                    api.create(ctx, name, e["size"])
                with rbd.Image(ctx, name) as img:
                    for i in range(min(e["fill_mib"], e["size"] // MiB)):
                        # clones: write past the parent's first MiBs so they differ
                        offset = (i + (e["fill_mib"] if e["parent"] else 0)) * MiB
                        if offset + MiB <= e["size"]:
                            img.write(fill_bytes(spec, i), offset)
                existing[where].add(name)
                created += 1
            if e["parent"] is None and any(o["parent"] == name and o["storage"] == e["storage"] for o in images):
                with rbd.Image(ctx, name) as base:  # a base image: the snapshot its clones hang from
                    if BASE_SNAP not in {s["name"] for s in base.list_snaps()}:
                        base.create_snap(BASE_SNAP)
                    if not base.is_protected_snap(BASE_SNAP):
                        base.protect_snap(BASE_SNAP)
    finally:
        for ctx in ioctxs.values():
            ctx.close()
        cluster.shutdown()
    return len(images), created


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", default=str(DEFAULT_FIXTURE))
    ap.add_argument("--conf", help="ceph.conf of the cluster to create the images on")
    ap.add_argument("--id", default="admin", help="Ceph client id (default admin)")
    ap.add_argument("--list", action="store_true", help="print the images as JSON, touch nothing")
    args = ap.parse_args()
    fixture = json.loads(Path(args.fixture).read_text())
    if args.list:
        json.dump(fixture_images(fixture), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not args.conf:
        ap.error("--conf is required unless --list")
    total, created = create_images(fixture, args.conf, args.id)
    print(f"pve fixture images: {total} named, {created} created, {total - created} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
