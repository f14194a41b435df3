"""Shared pieces of the REST API tests (test_rest_api*.py).

``FakeBackend`` stands in for the core (catalog, mapping, restore) where a test is about the web
layer — authentication, path checks, error codes, the schemathesis run — and needs no Ceph. Its
"mounted snapshot" is a real directory tree with real symlinks, made in a temporary directory;
the lab test (test_rest_api_lab.py) repeats the path checks on a real ext4 snapshot mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# `make` installs the package editable (pip install -e .); a bare venv still finds it here.
for extra in (REPO / "src", REPO / "collections"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from backurne_api.auth import TokenStore, hash_token
from backurne_api.backend import (
    Conflict,
    Filesystem,
    InvalidInput,
    Mapped,
    NotFound,
    RestoreRequest,
)
from backurne_api.jobs import JobFailed
from backurne_cli.config import ApiSettings, Config

GOOD_TOKEN = "good-token-0123456789abcdefghijklmnopqrstuv"
OTHER_TOKEN = "other-token-0123456789abcdefghijklmnopqrstu"
WRONG_TOKEN = "wrong-token-0123456789abcdefghijklmnopqrstu"
IMAGE = "live;vm-100-disk-0;None"
SNAP_OLD = "backup;daily;30;2026-11-28T10:00:00.000000"
SNAP_NEW = "backup;daily;30;2026-11-29T10:00:00.000000"
HOSTNAME_CONTENT = b"snaphost\n"
SECRET_CONTENT = b"TOP SECRET outside the snapshot\n"


def write_tokens(path: Path, *tokens: tuple[str, str]) -> Path:
    path.write_text("# test tokens\n" + "".join(f"{hash_token(t)} {label}\n" for t, label in tokens))
    return path


def config(tmp_path: Path, *, anonymous: bool = False, tokens_file: Path | None = None) -> Config:
    return Config(
        state_dir=str(tmp_path / "state"),
        api=ApiSettings(tokens_file=str(tokens_file) if tokens_file else None, anonymous=anonymous),
        source=str(tmp_path / "backurne.yml"),
    )


def build_snapshot_tree(base: Path) -> tuple[Path, Path]:
    """(mountpoint, a secret file outside it) with symlinks of every kind."""
    outside = base / "outside"
    outside.mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET_CONTENT)
    mnt = base / "mnt" / "p1"
    (mnt / "etc").mkdir(parents=True)
    (mnt / "etc" / "hostname").write_bytes(HOSTNAME_CONTENT)
    (mnt / "etc" / "hostname-link").symlink_to("hostname")
    (mnt / "data").mkdir()
    (mnt / "data" / "up-and-back").symlink_to("../etc/hostname")
    (mnt / "escape-abs").symlink_to(secret)
    (mnt / "escape-rel").symlink_to("../../outside/secret.txt")
    (mnt / "escape-dir").symlink_to("../../outside")
    (mnt / "escape-root").symlink_to("/")
    (mnt / "escape-nowhere").symlink_to("../../outside/no-such-file")
    (mnt / "loop").symlink_to("loop")
    (mnt / "dangling").symlink_to("nothing-here")
    (mnt / "file with spaces ü.txt").write_bytes(b"spaces\n")
    os.mkfifo(mnt / "fifo")
    return mnt, secret


@dataclass
class FakeBackend:
    """Catalog, mapping and restore of one image with two snapshots; mounts are directories."""

    mountpoint: Path
    images: dict[str, list[str]] = field(default_factory=lambda: {IMAGE: [SNAP_OLD, SNAP_NEW]})
    mapped_now: dict[tuple[str, str], Mapped] = field(default_factory=dict)
    restore_gate: threading.Event = field(default_factory=threading.Event)
    restores: list[RestoreRequest] = field(default_factory=list)
    fail_restore: bool = False
    existing_targets: set[str] = field(default_factory=set)
    on_restore: Callable[[RestoreRequest], None] | None = None
    holds: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.restore_gate.set()

    def _disk(self, image: str) -> dict[str, Any]:
        snaps = self.images[image]
        ident, disk, comment = image.split(";")
        return {
            "image": image,
            "ident": ident,
            "disk": disk,
            "comment": comment,
            "size": 8 << 20,
            "snapshot_count": len(snaps),
            "newest_snapshot": snaps[-1] if snaps else None,
            "newest_created": snaps[-1].split(";")[3] if snaps else None,
        }

    def list_images(self) -> list[dict[str, Any]]:
        return [self._disk(image) for image in sorted(self.images)]

    def image_snapshots(self, image: str) -> dict[str, Any]:
        if image not in self.images:
            raise NotFound(f"backup image {image!r} not found", image=image)
        out = self._disk(image)
        out["snapshots"] = [
            {"name": s, "profile": "daily", "count": 30, "created": s.split(";")[3], "size": 8 << 20}
            for s in self.images[image]
        ]
        out["foreign_snapshots"] = []
        return out

    def resolve_snapshot(self, image: str, snapshot: str) -> str:
        if image not in self.images:
            raise NotFound(f"backup image {image!r} not found", image=image)
        snaps = self.images[image]
        if snapshot == "latest" and snaps:
            return snaps[-1]
        if snapshot in snaps:
            return snapshot
        raise NotFound(f"no snapshot {snapshot!r} of {image!r}", image=image, snapshot=snapshot)

    def map(self, image: str, snapshot: str) -> Mapped:
        key = (image, snapshot)
        if key in self.mapped_now:
            raise Conflict(f"image {image!r} snapshot {snapshot!r} is already mapped", image=image, snapshot=snapshot)
        mapping = Mapped(image, snapshot, (Filesystem("p1", str(self.mountpoint), "ext4"),), {"clone": "fake"})
        self.mapped_now[key] = mapping
        return mapping

    def unmap(self, image: str, snapshot: str) -> None:
        if self.mapped_now.pop((image, snapshot), None) is None:
            raise NotFound(f"image {image!r} snapshot {snapshot!r} is not mapped", image=image, snapshot=snapshot)

    def list_mapped(self) -> list[Mapped]:
        return list(self.mapped_now.values())

    def mapped(self, image: str, snapshot: str) -> Mapped:
        try:
            return self.mapped_now[(image, snapshot)]
        except KeyError:
            raise NotFound(
                f"image {image!r} snapshot {snapshot!r} is not mapped", image=image, snapshot=snapshot
            ) from None

    def live_clusters(self) -> list[str]:
        return ["live"]

    def check_restore(self, request: RestoreRequest) -> dict[str, Any]:
        if request.cluster != "live":
            raise InvalidInput(f"no live cluster {request.cluster!r}", image=request.image)
        dest = request.dest_image or "vm-100-disk-0-restore"
        if dest in self.existing_targets and not request.force:
            raise Conflict(f"target image {dest!r} already exists", image=request.image, snapshot=request.snapshot)
        return {"dest_image": dest, "action": "create"}

    def restore(self, request: RestoreRequest, progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        self.restores.append(request)
        progress({"bytes": 0})
        self.restore_gate.wait(10)
        if self.on_restore:
            self.on_restore(request)
        if self.fail_restore:
            raise JobFailed("restore failed: import: (28) No space left on device", {"ok": False})
        progress({"bytes": 8 << 20})
        return {"ok": True, "target": f"rbd/{request.dest_image or 'vm-100-disk-0-restore'}"}

    def list_holds(self, image: str) -> list[dict[str, Any]]:
        if image not in self.images:
            raise NotFound(f"backup image {image!r} not found", image=image)
        return [hold for (i, _s), hold in self.holds.items() if i == image]

    def set_hold(self, image: str, snapshot: str, reason: str, until: str | None, by: str) -> dict[str, Any]:
        if snapshot not in self.images.get(image, []):
            raise NotFound(f"no snapshot {snapshot!r} of {image!r}", image=image, snapshot=snapshot)
        hold = {"snapshot": snapshot, "reason": reason, "until": until, "by": by, "at": None, "active": True}
        self.holds[(image, snapshot)] = hold
        return {"image": image, **hold}

    def release_hold(self, image: str, snapshot: str) -> dict[str, Any]:
        hold = self.holds.pop((image, snapshot), None)
        if hold is None:
            raise NotFound(f"snapshot {snapshot!r} of {image!r} has no hold", image=image, snapshot=snapshot)
        return {"image": image, **hold, "released": True}

    def overview(self) -> dict[str, Any]:
        images = [{**d, "freshness": "fresh", "age": "1h", "last_run": None} for d in self.list_images()]
        return {"now": "2026-11-29T11:00:00", "images": images}

    def health(self) -> dict[str, Any]:
        return {"status": "OK", "checked": 1, "findings": [], "errors": [], "now": "2026-11-29T11:00:00"}


def token_store(tmp_path: Path) -> TokenStore:
    return TokenStore(write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "tester"), (OTHER_TOKEN, "other")))


def auth(token: str = GOOD_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_api(config: Path, url: str, log: Path, env: dict[str, str], token: str) -> subprocess.Popen[bytes]:
    """`backurne-api --config CONFIG` as an operator runs it, once it answers /health."""
    import httpx  # only the lab tests need a real server

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backurne_api.main", "--config", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"backurne-api did not start:\n{log.read_text()}")
        time.sleep(0.2)


def unmap_and_purge(lab: Any, config: Path, state_dir: Path, env: dict[str, str], ns: str, clusters: list[str]) -> None:
    """Whatever a failed test left mapped, then the test's namespace on both clusters."""
    if state_dir.exists():
        subprocess.run(
            [sys.executable, "-m", "backurne_cli.main", "--config", str(config), "unmap", "--all"],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(lab.purge_namespace, cluster, ns) for cluster in clusters]:
            future.result()
