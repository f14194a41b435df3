# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The bandwidth limit's token buckets against a fake clock: the sleeps are exact.
import os
import threading

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.stream import transfer
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import (
    MIN_BURST,
    MIN_SLICE,
    BandwidthLimit,
    NodeThrottle,
    Throttle,
    TokenBucket,
    parse_rate,
)

MIB = 1 << 20


class FakeClock:
    """time.monotonic and time.sleep in one: a sleep advances the clock, and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("512K", 512 * 1024),
        ("100M", 100 * MIB),
        ("1.5G", 3 * (1 << 29)),
        ("2T", 2 << 40),
        ("100m", 100 * MIB),
        ("100MiB", 100 * MIB),
        ("100MB/s", 100 * MIB),
        (" 64 K ", 64 * 1024),
        (None, None),
        ("", None),
        (0, None),
        ("0", None),
        ("0M", None),
    ],
)
def test_parse_rate_reads_bytes_and_binary_units(value: object, expected: int | None) -> None:
    assert parse_rate(value) == expected


@pytest.mark.parametrize("value", ["fast", "10X", "-1", "1.2.3M", "M", "0.1", True, "10 M B extra"])
def test_parse_rate_refuses_bad_values_naming_the_option(value: object) -> None:
    with pytest.raises(ValueError, match=r"^bwlimit_node: ") as caught:
        parse_rate(value, "bwlimit_node")
    assert repr(value) in str(caught.value)


def test_parse_rate_refuses_a_negative_integer() -> None:
    with pytest.raises(ValueError, match=r"bwlimit: -5 is negative"):
        parse_rate(-5)


def test_bandwidth_limit_names_the_bad_option() -> None:
    assert BandwidthLimit.from_options("1M", "4M") == BandwidthLimit(MIB, 4 * MIB)
    assert not BandwidthLimit.from_options(None, "0").limited
    with pytest.raises(ValueError, match=r"^bwlimit: 'x'"):
        BandwidthLimit.from_options("x", "1M")
    with pytest.raises(ValueError, match=r"^bwlimit_node: 'y'"):
        BandwidthLimit.from_options("1M", "y")


def test_bucket_lets_the_burst_through_then_sleeps_exactly_for_the_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(MIB, burst=256 * 1024, clock=clock, sleep=clock.sleep)
    assert bucket.take(256 * 1024) == 0.0  # the full bucket: no wait
    assert bucket.take(512 * 1024) == pytest.approx(0.5)  # 512 KiB of debt at 1 MiB/s
    assert clock.sleeps == [pytest.approx(0.5)]
    # The sleep paid the debt: the bucket is empty, the next 1 MiB costs exactly 1 s.
    assert bucket.take(MIB) == pytest.approx(1.0)


def test_bucket_refills_with_time_up_to_its_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(MIB, burst=128 * 1024, clock=clock, sleep=clock.sleep)
    bucket.take(128 * 1024)
    clock.now += 60.0  # idle for a minute: the bucket holds one burst, not 60 MiB
    assert bucket.take(128 * 1024) == 0.0
    assert bucket.take(MIB) == pytest.approx(1.0)


def test_bucket_long_run_rate_is_the_limit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10 * MIB, clock=clock, sleep=clock.sleep)
    start = clock.now
    total = 0
    for _round in range(1000):
        bucket.take(64 * 1024)
        total += 64 * 1024
    # total bytes = rate * elapsed + one burst, exactly (pay after: the last slice's wait included).
    assert total == pytest.approx(10 * MIB * (clock.now - start) + bucket.burst, rel=1e-9)


def test_default_burst_is_a_tenth_of_a_second_but_at_least_min_burst() -> None:
    clock = FakeClock()
    assert TokenBucket(100 * MIB, clock=clock).burst == 10 * MIB
    assert TokenBucket(1000, clock=clock).burst == MIN_BURST


def test_bucket_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        TokenBucket(0)


def test_throttle_waits_for_the_slowest_bucket_and_pays_all() -> None:
    clock = FakeClock()
    fast = TokenBucket(4 * MIB, burst=MIB, clock=clock, sleep=clock.sleep)
    slow = TokenBucket(MIB, burst=MIB, clock=clock, sleep=clock.sleep)
    throttle = Throttle((fast, slow), sleep=clock.sleep)
    assert throttle.take(MIB) == 0.0
    assert throttle.take(2 * MIB) == pytest.approx(2.0)  # slow: 2 MiB at 1 MiB/s
    assert clock.sleeps == [pytest.approx(2.0)]
    # The fast bucket's own 0.5 s of debt ran off during that wait: 4 MiB more cost it 1 s,
    # the slow one 4 s.
    assert fast.debit(0) == 0.0
    assert throttle.take(4 * MIB) == pytest.approx(4.0)


def test_node_bucket_is_shared_by_every_stream_of_the_process() -> None:
    clock = FakeClock()
    node = NodeThrottle(BandwidthLimit(per_transfer=10 * MIB, per_node=2 * MIB), clock=clock, sleep=clock.sleep)
    first, second = node.for_stream(), node.for_stream()
    assert first is not None and second is not None
    assert first.buckets[1] is second.buckets[1] is node.node_bucket
    assert first.buckets[0] is not second.buckets[0]
    node_burst = node.node_bucket.burst if node.node_bucket else 0
    first.take(node_burst)
    # Two streams, 1 MiB each, at the same moment: the node total makes the second wait for both.
    assert first.take(MIB) == pytest.approx(0.5)
    assert second.take(MIB) == pytest.approx(0.5)  # the first's 0.5 s ran off; its own 1 MiB at 2 MiB/s


def test_node_throttle_without_limit_gives_no_throttle() -> None:
    assert NodeThrottle(BandwidthLimit()).for_stream() is None
    per_node_only = NodeThrottle(BandwidthLimit(per_node=MIB)).for_stream()
    assert per_node_only is not None and len(per_node_only.buckets) == 1


def test_shared_bucket_is_thread_safe_tokens_are_never_lost() -> None:
    clock = FakeClock()
    bucket = TokenBucket(MIB, burst=MIB, clock=clock, sleep=lambda _s: None)

    def spend() -> None:
        for _round in range(1000):
            bucket.debit(1024)

    threads = [threading.Thread(target=spend) for _round in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 4000 KiB spent from a full 1 MiB bucket, the clock frozen: exactly 2976 KiB of debt.
    assert bucket.debit(0) == pytest.approx(2976 * 1024 / MIB)


def test_slice_size_keeps_the_sleeps_short() -> None:
    clock = FakeClock()
    assert Throttle((TokenBucket(MIB, clock=clock),)).slice_size(MIB) == MIB // 20
    assert Throttle((TokenBucket(1024, clock=clock),)).slice_size(MIB) == MIN_SLICE
    assert Throttle((TokenBucket(1 << 40, clock=clock),)).slice_size(MIB) == MIB
    assert Throttle(()).slice_size(MIB) == MIB


def test_relay_paces_what_it_moves_through_the_throttle() -> None:
    """The relay (splice path) pays the throttle for every byte it moves, in slices."""
    clock = FakeClock()
    paid: list[int] = []

    class Recorder(Throttle):
        def take(self, size: int) -> float:
            paid.append(size)
            return super().take(size)

    throttle = Recorder((TokenBucket(MIB, burst=64 * 1024, clock=clock, sleep=clock.sleep),), sleep=clock.sleep)
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    payload = os.urandom(3 * 64 * 1024)
    with os.fdopen(src_r, "rb") as src, os.fdopen(dst_w, "wb") as dst:
        relay = transfer._Relay(src, dst, threading.Event(), throttle=throttle)
        relay.start()
        os.write(src_w, payload)
        os.close(src_w)
        received = b""
        while len(received) < len(payload):
            received += os.read(dst_r, 1 << 20)
        relay.join(10)
    os.close(dst_r)
    assert received == payload
    assert sum(paid) == len(payload) == relay.count
    assert max(paid) <= throttle.slice_size(transfer.CHUNK_SIZE)
    # 192 KiB through a 1 MiB/s bucket holding 64 KiB: 128 KiB of debt slept off.
    assert sum(clock.sleeps) == pytest.approx(128 * 1024 / MIB)
