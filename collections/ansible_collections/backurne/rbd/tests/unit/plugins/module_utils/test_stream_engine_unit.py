# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The stream engine's applier (an `rbd import-diff` v1 parser) against a recording image: which
# librbd calls a stream makes, fed whole or byte by byte, and what it refuses. Real Ceph:
# tests/integration/test_stream_engine.py (equivalence with export-diff | import-diff, faults).
import struct
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.stream import engine_live
from ansible_collections.backurne.rbd.plugins.module_utils.stream.engine import (
    BANNER,
    DiffApplier,
    StreamFailed,
    engine_source,
)


class RecordingImage:
    def __init__(self, size: int = 1 << 20, snaps: tuple[str, ...] = ()) -> None:
        self.current = size
        self.snaps = list(snaps)
        self.calls: list[tuple[Any, ...]] = []

    def list_snaps(self) -> list[dict[str, Any]]:
        return [{"name": name} for name in self.snaps]

    def size(self) -> int:
        return self.current

    def resize(self, size: int) -> None:
        self.calls.append(("resize", size))
        self.current = size

    def write(self, data: bytes, offset: int) -> int:
        self.calls.append(("write", offset, len(data)))
        return len(data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.calls.append(("zero", offset, length))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def create_snap(self, name: str) -> None:
        self.calls.append(("snap", name))
        self.snaps.append(name)


def name(tag: bytes, value: str) -> bytes:
    raw = value.encode()
    return tag + struct.pack("<I", len(raw)) + raw


def stream(*records: bytes, base: str | None = None, to: str = "s2", size: int = 2 << 20) -> bytes:
    head = BANNER + (name(b"f", base) if base else b"") + name(b"t", to) + b"s" + struct.pack("<Q", size)
    return head + b"".join(records) + b"e"


def w(offset: int, data: bytes) -> bytes:
    return b"w" + struct.pack("<QQ", offset, len(data)) + data


def z(offset: int, length: int) -> bytes:
    return b"z" + struct.pack("<QQ", offset, length)


DATA = b"\x01" * 4096 + bytes(8192) + b"\x02" * 100


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_applies_like_import_diff_whole_or_in_pieces(piece: int | None) -> None:
    image = RecordingImage(snaps=("s1",))
    applier = DiffApplier(image, "s1", "s2")
    data = stream(w(65536, DATA), z(1 << 20, 4096), base="s1")
    chunks = [data] if piece is None else [data[i : i + piece] for i in range(0, len(data), piece)]
    for chunk in chunks:
        applier.feed(chunk)
    applier.finish()
    # Resize first; the record's all-zero 4 KiB blocks become write-zeroes (import-diff's sparse
    # detection, counted from the record's start); the zero record too; the snapshot last.
    assert image.calls == [
        ("resize", 2 << 20),
        ("write", 65536, 4096),
        ("zero", 65536 + 4096, 8192),
        ("write", 65536 + 12288, 100),
        ("zero", 1 << 20, 4096),
        ("flush",),
        ("snap", "s2"),
    ]


def test_empty_diff_only_snapshots() -> None:
    image = RecordingImage(size=2 << 20, snaps=("s1",))
    applier = DiffApplier(image, "s1", "s2")
    applier.feed(stream(base="s1"))
    applier.finish()
    assert image.calls == [("flush",), ("snap", "s2")]
    assert not applier.touched


def test_truncated_stream_creates_no_snapshot() -> None:
    image = RecordingImage()
    applier = DiffApplier(image, None, "s2")
    applier.feed(stream(w(0, b"\x05" * 10000))[:-300])
    with pytest.raises(StreamFailed, match="truncated"):
        applier.finish()
    assert ("snap", "s2") not in image.calls


@pytest.mark.parametrize(
    ("data", "snaps", "expected_from", "message"),
    [
        (stream(base="s1"), (), "s1", "start snapshot 's1' does not exist"),
        (stream(base="s1", to="s0"), ("s1",), "s1", "diff ends at snapshot 's0', expected 's2'"),
        (stream(to="s2"), ("s2",), None, "end snapshot 's2' already exists"),
        (stream(), (), "s1", "no start snapshot record"),
        (b"rbd diff v2\n" + stream()[12:], (), None, "invalid or unexpected diff banner"),
        (stream(b"q"), (), None, "unrecognized tag byte 113"),
        (stream() + b"x", (), None, "after the end record"),
    ],
)
def test_refuses_before_writing(data: bytes, snaps: tuple[str, ...], expected_from: str | None, message: str) -> None:
    image = RecordingImage(snaps=snaps)
    applier = DiffApplier(image, expected_from, "s2")
    with pytest.raises(StreamFailed, match=message):
        applier.feed(data)
        applier.finish()
    assert not [call for call in image.calls if call[0] in ("write", "zero", "snap")]


def test_live_source_is_shipped_whole() -> None:
    source = engine_source()
    assert source.count(b'if __name__ == "__main__":') == 1
    compile(source, "backurne-stream-engine", "exec")
    assert engine_live.BANNER == BANNER
