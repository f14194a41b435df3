#!/usr/bin/python3
"""Bulk fixture work on one lab cluster through python3-rbd, in one process (no rbd CLI per image).

Run with Debian's /usr/bin/python3 (the only interpreter with the rados/rbd modules); prints one
JSON document. Used by the benchmarks to create hundreds of small images, change some of them,
and remove a whole namespace quickly — fixture work only, never what is measured.

    rbd_bulk.py create --conf C --namespace NS --prefix img- --count 200 [--size 1048576] [--write 4096]
    rbd_bulk.py write  --conf C --namespace NS --prefix img- --count 200 --every 10 [--offset 65536]
    rbd_bulk.py snap   --conf C --namespace NS --prefix img- --count 200 --snap NAME
    rbd_bulk.py purge  --conf C --namespace NS
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rados  # type: ignore[import-not-found]
import rbd  # type: ignore[import-not-found]

POOL = "rbd"


def _data(seed: str, index: int, length: int) -> bytes:
    return hashlib.shake_128(f"backurne-bench:{seed}:{index}".encode()).digest(length)


def _parallel(func: Callable[[str], None], names: list[str], workers: int) -> list[str]:
    errors: list[str] = []

    def guarded(name: str) -> None:
        try:
            func(name)
        except Exception as exc:
            errors.append(f"{name}: {exc!r}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(guarded, names))
    return errors


def create(ioctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"{args.prefix}{index:05d}" for index in range(args.count)]

    def one(name: str) -> None:
        rbd.RBD().create(ioctx, name, args.size)
        if args.write:
            with rbd.Image(ioctx, name) as image:
                image.write(_data(args.seed, int(name[len(args.prefix) :]), args.write), 0)

    return {"images": len(names), "errors": _parallel(one, names, args.workers)}


def write(ioctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"{args.prefix}{index:05d}" for index in range(0, args.count, args.every)]

    def one(name: str) -> None:
        with rbd.Image(ioctx, name) as image:
            image.write(_data(args.seed, int(name[len(args.prefix) :]), args.length), args.offset)

    return {"images": names, "errors": _parallel(one, names, args.workers)}


def snap(ioctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Snapshot every image, as the snapshot module does on a live node (librbd in process)."""
    names = [f"{args.prefix}{index:05d}" for index in range(args.count)]

    def one(name: str) -> None:
        with rbd.Image(ioctx, name) as image:
            image.create_snap(args.snap)

    return {"images": len(names), "errors": _parallel(one, names, args.workers)}


def purge(ioctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    ioctx.set_namespace("")
    if not rbd.RBD().namespace_exists(ioctx, args.namespace):
        return {"images": 0, "errors": [], "namespace_removed": False}
    ioctx.set_namespace(args.namespace)
    errors: list[str] = []
    for entry in rbd.RBD().trash_list(ioctx):
        rbd.RBD().trash_restore(ioctx, entry["id"], entry["name"])
    names = list(rbd.RBD().list(ioctx))

    def one(name: str) -> None:
        with rbd.Image(ioctx, name) as image:
            for snap in list(image.list_snaps()):
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        rbd.RBD().remove(ioctx, name)

    for _ in range(3):  # clones before their parents: retry in rounds
        errors = _parallel(one, names, args.workers)
        names = list(rbd.RBD().list(ioctx))
        if not names:
            break
    removed = False
    if not names:
        ioctx.set_namespace("")
        rbd.RBD().namespace_remove(ioctx, args.namespace)
        removed = True
    return {"images_left": names, "errors": errors, "namespace_removed": removed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("create", "write", "snap", "purge"))
    parser.add_argument("--conf", required=True)
    parser.add_argument("--id", default="admin")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--prefix", default="img-")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--write", type=int, default=4096, help="bytes written at offset 0 of a new image")
    parser.add_argument("--every", type=int, default=10, help="write: every Nth image")
    parser.add_argument("--offset", type=int, default=64 * 1024)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--snap", default="", help="snap: the snapshot name")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    started = time.monotonic()
    cluster = rados.Rados(conffile=args.conf, rados_id=args.id)
    cluster.connect(timeout=30)
    try:
        ioctx = cluster.open_ioctx(POOL)
        try:
            if args.command != "purge":
                ioctx.set_namespace(args.namespace)
            result = {"create": create, "write": write, "snap": snap, "purge": purge}[args.command](ioctx, args)
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()
    result["seconds"] = round(time.monotonic() - started, 3)
    json.dump(result, sys.stdout)
    print()
    return 1 if result.get("errors") or result.get("images_left") else 0


if __name__ == "__main__":
    sys.exit(main())
