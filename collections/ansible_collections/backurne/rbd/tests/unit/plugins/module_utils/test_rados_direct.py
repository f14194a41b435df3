# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph import lock as lock_mod
from ansible_collections.backurne.rbd.plugins.module_utils.ceph import rados_listing as rados_direct
from ansible_collections.backurne.rbd.plugins.module_utils.ceph import rbd as rbd_mod
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rados_listing import (
    OMAP_PAGE,
    ImageMissing,
    ListingUnsupported,
    RadosSession,
    decode_directory_id,
    decode_snapshot,
    image_header,
    image_metadata,
    list_images_rados,
    user_snapshots,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner

# Values read from a Ceph 16.2 lab (`rados getomapval rbd_header.<id> snapshot_<id>`): compat
# version 8 (Nautilus+ OSDs), so no features/parent fields.
PACIFIC_USER = bytes.fromhex(
    "0808390000000001000000000000050000006f7468657200004000000000000000000000000000000101040000"
    "000000000094ee0c6baf40de1d0000000000"
)
PACIFIC_TRASH = bytes.fromhex(
    "080869000000ff000000000000002400000033393332323333662d336637642d343566342d626234372d3461"
    "39633831333466366265000040000000000000000000000000000001011500000002000000090000006261636b"
    "75705f73310000000094ee0c6b50d4a4170100000000"
)
PACIFIC_GROUP = bytes.fromhex(
    "08087e0000000101000000000000220000002e67726f75702e315f3136336436623862343536375f31363433"
    "3662386234353637000040000000000000000000000000000001012c0000000100000001000000000000000c"
    "0000003136336436623862343536370c000000313634333662386234353637d0ee0c6b903ca30f0000000000"
)

# The same snapshot ("other", 4 MiB image) and directory entry read from Ceph 18.2.7 (reef) and
# 20.2.4 (tentacle) lab clusters (BACKURNE_LAB_CEPH_LIVE=20 BACKURNE_LAB_CEPH_BACKUP=18, the
# node's python3-rados): the layout is Pacific's, only ids and timestamps differ.
REEF_USER = bytes.fromhex(
    "0808390000001100000000000000050000006f746865720000400000000000000000000000000000010104000000"
    "00000000baad116b431fc41a0000000000"
)
TENTACLE_USER = bytes.fromhex(
    "0808390000000d00000000000000050000006f746865720000400000000000000000000000000000010104000000"
    "00000000b3ad116bb81516300000000000"
)
REEF_DIRECTORY_NAME = bytes.fromhex("0c000000313062396237316563313465")
TENTACLE_DIRECTORY_NAME = bytes.fromhex("0c000000313064353336646165383937")


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _struct(version: int, compat: int, body: bytes) -> bytes:
    return struct.pack("<BBI", version, compat, len(body)) + body


def _old_snapshot(version: int, snap_id: int, name: str, namespace_type: int | None = None) -> bytes:
    """cls_rbd_snap as pre-Nautilus OSDs wrote it (compat 1: features and parent present)."""
    body = struct.pack("<Q", snap_id) + _string(name) + struct.pack("<QQ", 1 << 20, 0)
    if version >= 2:
        body += _struct(1, 1, struct.pack("<q", -1) + _string("") + struct.pack("<QQ", 2**64 - 2, 0))
    if version >= 3:
        body += b"\x00"
    if version >= 4:
        body += struct.pack("<Q", 0)
    if version >= 5:
        body += _struct(1, 1, struct.pack("<I", namespace_type or 0))
    if version >= 6:
        body += struct.pack("<II", 1700000000, 0)
    return _struct(version, 1, body)


def test_pacific_encodings() -> None:
    assert decode_snapshot(PACIFIC_USER) == (0x100, "other", 0)
    assert decode_snapshot(PACIFIC_TRASH) == (0xFF, "3932233f-3f7d-45f4-bb47-4a9c8134f6be", 2)
    snap_id, name, kind = decode_snapshot(PACIFIC_GROUP)
    assert (snap_id, kind) == (0x101, 1) and name.startswith(".group.")


def test_reef_and_tentacle_encodings() -> None:
    assert decode_snapshot(REEF_USER) == (0x11, "other", 0)
    assert decode_snapshot(TENTACLE_USER) == (0x0D, "other", 0)
    assert decode_directory_id(REEF_DIRECTORY_NAME) == "10b9b71ec14e"
    assert decode_directory_id(TENTACLE_DIRECTORY_NAME) == "10d536dae897"


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_older_encodings(version: int) -> None:
    assert decode_snapshot(_old_snapshot(version, 7, "backup;daily;30;2026-01-01T00:00:00")) == (
        7,
        "backup;daily;30;2026-01-01T00:00:00",
        0,
    )


def test_older_encoding_with_a_trash_namespace() -> None:
    assert decode_snapshot(_old_snapshot(5, 9, "x", namespace_type=2))[2] == 2


def _bumped(value: bytes, version: int, compat: int, appended: bytes = b"") -> bytes:
    """A snapshot value as a later Ceph could write it: new versions, a field appended."""
    body = value[6:] + appended
    return struct.pack("<BBI", version, compat, len(body)) + body


def test_a_later_version_that_only_appends_is_read() -> None:
    assert decode_snapshot(_bumped(PACIFIC_USER, 9, 8, b"\x01\x02\x03\x04")) == (0x100, "other", 0)


@pytest.mark.parametrize(("version", "compat"), [(9, 9), (12, 10), (5, 6)])
def test_a_compat_version_it_does_not_know_is_unsupported(version: int, compat: int) -> None:
    # what Ceph's DECODE_START refuses ("struct compat version too new"): the CLI lists it
    with pytest.raises(ListingUnsupported, match="not known"):
        decode_snapshot(_bumped(PACIFIC_USER, version, compat))


@pytest.mark.parametrize(
    "value",
    [b"", PACIFIC_USER[:20], _struct(0, 0, b""), PACIFIC_USER[:2] + struct.pack("<I", 500) + PACIFIC_USER[6:]],
)
def test_garbage_is_unsupported_not_guessed(value: bytes) -> None:
    with pytest.raises(ListingUnsupported):
        decode_snapshot(value)


def test_user_snapshots_oldest_first_and_only_user_ones() -> None:
    values = [
        ("snapshot_0000000000000102", _old_snapshot(6, 0x102, "newest")),
        ("snapshot_00000000000000ff", PACIFIC_TRASH),
        ("snapshot_0000000000000100", PACIFIC_USER),
        ("snapshot_0000000000000101", PACIFIC_GROUP),
        ("size", struct.pack("<Q", 4 << 20)),  # not a snapshot key
    ]
    assert user_snapshots(values) == ["other", "newest"]


def test_directory_id() -> None:
    assert decode_directory_id(_string("1625a3fa5186")) == "1625a3fa5186"
    for bad in (b"", _string(""), _string("abc") + b"x"):
        with pytest.raises(ListingUnsupported):
            decode_directory_id(bad)


class FakeRados:
    """The part of python3-rados the reader uses, over a dict of objects."""

    class ObjectNotFound(Exception):
        pass

    class ObjectBusy(Exception):
        pass

    class ObjectExists(Exception):
        pass

    class ReadOpCtx:
        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def __init__(self, objects: dict[str, dict[str, bytes]], directory_size: int = 0) -> None:
        self.objects = objects
        self.directory_size = directory_size
        self.reads: list[tuple[str, str, str]] = []
        self.shut = False
        self.namespace: str | None = None

    # rados.Rados
    def open_ioctx(self, pool: str) -> FakeRados:
        assert pool == "rbd"
        return self

    def shutdown(self) -> None:
        self.shut = True

    # rados.Ioctx
    def set_namespace(self, namespace: str) -> None:
        self.namespace = namespace

    def close(self) -> None:
        pass

    def stat(self, oid: str) -> tuple[int, object]:
        if oid not in self.objects:
            raise self.ObjectNotFound(oid)
        return (self.directory_size if oid == "rbd_directory" else 0), None

    def get_instance_id(self) -> int:
        return 4242

    def get_omap_vals(self, op: Any, after: str, prefix: str, limit: int) -> tuple[Any, int]:
        result: list[tuple[str, bytes]] = []
        op.__dict__.setdefault("pending", []).append(("vals", (after, prefix, limit), result))
        return result, 0

    def get_omap_vals_by_keys(self, op: Any, keys: tuple[str, ...]) -> tuple[Any, int]:
        result: list[tuple[str, bytes]] = []
        op.__dict__.setdefault("pending", []).append(("keys", keys, result))
        return result, 0

    def operate_read_op(self, op: Any, oid: str) -> None:
        pending = op.__dict__.pop("pending")
        if oid not in self.objects:
            raise self.ObjectNotFound(oid)
        for kind, args, result in pending:
            if kind == "keys":
                self.reads.append((oid, "", "by-keys"))
                result.extend((k, self.objects[oid][k]) for k in args if k in self.objects[oid])
                continue
            after, prefix, limit = args
            self.reads.append((oid, after, prefix))
            keys = sorted(k for k in self.objects[oid] if k.startswith(prefix) and k > after)[:limit]
            result.extend((k, self.objects[oid][k]) for k in keys)

    locks: dict[tuple[str, str], str]

    def lock_exclusive(self, oid: str, name: str, cookie: str, desc: str) -> None:
        held = self.__dict__.setdefault("locks", {})
        if (oid, name) in held:
            raise self.ObjectExists() if held[(oid, name)] == cookie else self.ObjectBusy()
        held[(oid, name)] = cookie

    def unlock(self, oid: str, name: str, cookie: str) -> None:
        held = self.__dict__.setdefault("locks", {})
        if held.get((oid, name)) != cookie:
            raise self.ObjectNotFound()
        del held[(oid, name)]


def _pool(images: dict[str, list[str]]) -> dict[str, dict[str, bytes]]:
    objects: dict[str, dict[str, bytes]] = {"rbd_directory": {}}
    for index, (name, snaps) in enumerate(images.items()):
        image_id = f"id{index:04x}"
        objects["rbd_directory"][f"name_{name}"] = _string(image_id)
        objects["rbd_directory"][f"id_{image_id}"] = _string(name)
        objects[f"rbd_header.{image_id}"] = {
            f"snapshot_{snap_id:016x}": _old_snapshot(6, snap_id, snap) for snap_id, snap in enumerate(snaps, 1)
        } | {"size": struct.pack("<Q", 1 << 20)}
    return objects


def test_list_images_rados() -> None:
    fake = FakeRados(_pool({"vm-1": ["a", "b"], "vm 2;x": [], "-lead": ["c"]}))
    session = RadosSession(fake, fake)
    assert session.list_images("rbd", "ns1") == {"vm-1": ["a", "b"], "vm 2;x": [], "-lead": ["c"]}
    assert fake.namespace == "ns1" and session.locker == "client.4242"
    session.close()
    assert fake.shut


def test_vanished_header_is_skipped_like_rbd_ls() -> None:
    objects = _pool({"kept": ["a"], "gone": ["b"]})
    del objects["rbd_header.id0001"]
    fake = FakeRados(objects)
    assert RadosSession(fake, fake).list_images("rbd", None) == {"kept": ["a"]}
    assert fake.namespace == ""


def test_pages_through_big_omaps() -> None:
    names = {f"img-{index:05d}": [] for index in range(OMAP_PAGE + 5)}
    names["img-00000"] = [f"s{index}" for index in range(OMAP_PAGE + 2)]
    fake = FakeRados(_pool(names))
    listed = list_images_rados(fake, fake)
    assert len(listed) == OMAP_PAGE + 5
    assert listed["img-00000"] == [f"s{index}" for index in range(OMAP_PAGE + 2)]
    assert sum(1 for read in fake.reads if read[0] == "rbd_directory") == 2


@pytest.mark.parametrize("case", ["format-1", "no-directory"])
def test_unsupported_pools(case: str) -> None:
    objects = _pool({"a": ["s"]})
    if case == "no-directory":
        del objects["rbd_directory"]
    fake = FakeRados(objects, directory_size=512 if case == "format-1" else 0)
    with pytest.raises(ListingUnsupported):
        list_images_rados(fake, fake)


class CliRecorder(RbdRunner):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.argvs: list[list[str]] = []

    def _execute(self, argv: list[str], *, timeout: float | None, stdin: bytes | None = None) -> Any:
        self.argvs.append(argv)
        return rbd_mod._Completed(argv, 0, '[{"image": "a"}, {"image": "a", "snapshot": "s1"}]', "")


def test_runner_uses_the_rados_listing_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRados(_pool({"a": ["s1", "s2"]}))
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    runner = CliRecorder(CephAccess())
    assert runner.list_images("rbd", "n") == {"a": ["s1", "s2"]}
    assert runner.last_listing == "rados" and runner.argvs == []
    assert runner.header("rbd/n/a") == ("rbd_header.id0000", 1 << 20, ["s1", "s2"])
    assert runner.snapshot_names("rbd/n/a") == ["s1", "s2"] and runner.argvs == []
    with pytest.raises(rbd_mod.RbdError) as missing:
        runner.header("rbd/n/nope")
    assert missing.value.is_not_found and "rbd/n/nope" in str(missing.value)


@pytest.mark.parametrize("why", ["no python3-rados", "unsupported", "rados error", "disabled", "remote"])
def test_runner_falls_back_to_rbd_ls(monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    fake = FakeRados(_pool({"a": ["s9"]}), directory_size=512 if why == "unsupported" else 0)

    def connect() -> FakeRados:
        if why == "rados error":
            raise OSError("auth failed")
        return fake

    monkeypatch.setattr(
        rados_direct, "rados_connector", lambda *a: None if why == "no python3-rados" else (fake, connect)
    )
    ssh = rbd_mod.SshTarget(host="live1") if why == "remote" else None
    runner = CliRecorder(CephAccess(), ssh=ssh, in_process=why != "disabled")
    assert runner.list_images("rbd", "n") == {"a": ["s1"]}
    assert runner.last_listing == "rbd"
    assert len(runner.argvs) == 1
    assert "--long" in " ".join(runner.argvs[0])  # remote: inside the ssh command


def test_image_header_reads() -> None:
    objects = _pool({"a": ["s1", "s2"]})
    objects["rbd_header.id0000"]["metadata_conf_x"] = b"not a snapshot"
    fake = FakeRados(objects)
    assert image_header(fake, fake, "a") == ("rbd_header.id0000", 1 << 20, ["s1", "s2"])
    with pytest.raises(ImageMissing):
        image_header(fake, fake, "b")
    del objects["rbd_header.id0000"]
    with pytest.raises(ImageMissing):
        image_header(fake, fake, "a")


class LockRunner(CliRecorder):
    """rados CLI calls recorded; `lock info` answers with the holders given."""

    holders_json = '{"lockers": []}'

    def _execute(self, argv: list[str], *, timeout: float | None, stdin: bytes | None = None) -> Any:
        self.argvs.append(argv)
        if "info" in argv and "lock" in argv:
            return rbd_mod._Completed(argv, 0, self.holders_json, "")
        return rbd_mod._Completed(argv, 0, "", "")


def test_lock_taken_and_released_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRados(_pool({"img": []}))
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    runner = LockRunner(CephAccess())
    taken = lock_mod.try_acquire(runner, "rbd", "n", "img", lock_mod.timedelta(hours=1))
    assert isinstance(taken, lock_mod.Lock) and taken.in_process
    assert taken.locker == "client.4242" and taken.size == 1 << 20 and taken.header_object == "rbd_header.id0000"
    assert fake.locks == {("rbd_header.id0000", "backurne"): taken.lock_id}
    assert runner.argvs == []  # no rbd, no rados process
    lock_mod.release(runner, taken)
    assert fake.locks == {} and runner.argvs == []


def test_lock_held_by_a_live_holder_goes_through_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRados(_pool({"img": []}))
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    other = lock_mod.make_lock_id(lock_mod.datetime.now(lock_mod.UTC), hostname="elsewhere", pid=1)
    fake.lock_exclusive("rbd_header.id0000", "backurne", other, "")
    runner = LockRunner(CephAccess())
    runner.holders_json = json.dumps({"lockers": [{"name": "client.7", "cookie": other, "addr": ""}]})
    busy = lock_mod.try_acquire(runner, "rbd", "n", "img", lock_mod.timedelta(hours=1))
    assert isinstance(busy, lock_mod.LockBusy) and busy.holder == other
    assert [argv[argv.index("lock") + 1] for argv in runner.argvs] == ["info"]


def test_operator_can_turn_the_in_process_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRados(_pool({"a": ["s9"]}))
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    monkeypatch.setenv("BACKURNE_RADOS_IN_PROCESS", "0")
    runner = CliRecorder(CephAccess())
    assert runner.rados_session() is None
    assert runner.list_images("rbd", "n") == {"a": ["s1"]} and runner.last_listing == "rbd"


def test_image_metadata_in_process_and_missing_image(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _pool({"a": ["s1"]})
    objects["rbd_header.id0000"]["metadata_backurne.pve.cluster"] = b"pve1"
    objects["rbd_header.id0000"]["metadata_backurne.pve.config"] = '{"name": "h\u00e9"}'.encode()
    fake = FakeRados(objects)
    assert image_metadata(fake, fake, "a") == {
        "backurne.pve.cluster": "pve1",
        "backurne.pve.config": '{"name": "h\u00e9"}',
    }
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    runner = CliRecorder(CephAccess())
    assert runner.image_meta("rbd/n/a")["backurne.pve.cluster"] == "pve1" and runner.argvs == []
    with pytest.raises(rbd_mod.RbdError) as missing:
        runner.image_meta("rbd/n/b")
    assert missing.value.is_not_found
    objects["rbd_header.id0000"]["metadata_bad"] = b"\xff"
    with pytest.raises(ListingUnsupported):
        image_metadata(fake, fake, "a")


def test_holds_come_with_the_listing_from_the_headers_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _pool({"a;b;None": ["s1", "s2"], "c;d;None": ["s3"]})
    objects["rbd_header.id0000"]["metadata_backurne.hold.s1"] = b'{"reason": "INC"}'
    objects["rbd_header.id0000"]["metadata_backurne.pve.cluster"] = b"not a hold"
    fake = FakeRados(objects)
    monkeypatch.setattr(rados_direct, "rados_connector", lambda *a: (fake, lambda: fake))
    runner = CliRecorder(CephAccess())
    listing, metas = runner.list_images_with_meta("rbd", None, "backurne.hold.")
    assert listing == {"a;b;None": ["s1", "s2"], "c;d;None": ["s3"]}
    assert metas == {"a;b;None": {"backurne.hold.s1": '{"reason": "INC"}'}, "c;d;None": {}}
    assert runner.argvs == []  # no rbd process, not even one per image
    # only the headers' snapshot and hold keys were read, no other image-meta
    assert {prefix for oid, _after, prefix in fake.reads if oid.startswith("rbd_header.")} == {
        "snapshot_",
        "metadata_backurne.hold.",
    }
