# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The bandwidth limit (playbook variable backurne_bwlimit): token buckets that whatever moves a
# stream's bytes asks before going on. The relay of transfer.py paces the bytes that cross ssh
# (the compressed stream) through a Throttle made of a bucket of its own (the per-transfer
# rate) and the node's bucket (the per-node total, one per module process, shared by all its
# worker threads). Nothing here knows about pipes or Ansible: another engine can pace through
# the same objects. The clock and the sleep are injectable, so the arithmetic is tested exactly.
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The burst: how much a bucket may let through at once after an idle spell, in seconds of its
# rate, but at least MIN_BURST bytes (a pipe page run is worth moving in one go).
BURST_SECONDS = 0.1
MIN_BURST = 64 * 1024
# A paced mover takes bytes in slices of at most this many seconds of the slowest rate (so the
# sleeps between slices stay short and the rate even), never less than MIN_SLICE bytes.
SLICE_SECONDS = 0.05
MIN_SLICE = 4096

# K, M, G, T are binary (1024-based), as rsync's --bwlimit and as report/units.py prints sizes
# (KiB, MiB...): "100M" is 100 MiB/s. "KiB"/"MiB"... and a trailing "B" or "/s" are accepted.
_UNIT_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_RATE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[KMGT]?)(?:I?B)?\s*(?:/\s*S)?\s*$")


def parse_rate(value: object, name: str = "bwlimit") -> int | None:
    """A rate in bytes per second from an option value; None (no limit) for None, "" or 0.

    Accepts an integer (bytes/s) or a number with a binary unit: ``512K``, ``100M``, ``1.5G``,
    ``100MiB``, ``100M/s``. Anything else, a negative value or a rate below 1 byte/s raises
    ValueError naming ``name`` and the value.
    """
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise ValueError(f"{name}: {value!r} is not a rate")
    if isinstance(value, int):
        number, factor = float(value), 1
    else:
        text = str(value)
        if not text.strip():
            return None
        match = _RATE.match(text.upper())
        if match is None:
            raise ValueError(
                f"{name}: {value!r} is not a rate (bytes per second, or a number with K, M, G or T, "
                "1024-based: e.g. 512K, 100M, 1.5G; 0 for no limit)"
            )
        number, factor = float(match.group("number")), _UNIT_FACTORS[match.group("unit")]
    if number < 0:
        raise ValueError(f"{name}: {value!r} is negative (0 means no limit)")
    rate = int(number * factor)
    if number == 0:
        return None
    if rate < 1:
        raise ValueError(f"{name}: {value!r} is less than 1 byte per second")
    return rate


class TokenBucket:
    """A rate in bytes per second with a burst; thread-safe (one bucket may pace several streams).

    ``take(n)`` spends n bytes' worth of tokens and sleeps as long as the bucket is in debt: the
    bytes may have moved already (pay after), and the caller goes on only when the rate allows
    it. Over any span T the bytes taken never exceed ``rate * T + burst``. Several threads
    taking at once queue up through the debt: each sleeps for what all of them took.
    """

    def __init__(
        self,
        rate: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1 byte per second, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(MIN_BURST, int(rate * BURST_SECONDS))
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1 byte, got {self.burst}")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)  # full: the first burst goes at once
        self._updated = clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def debit(self, size: int) -> float:
        """Spend ``size`` bytes' worth; the seconds to wait before going on (0.0: none)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= size
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self, size: int) -> float:
        """Spend ``size`` bytes' worth and sleep until the rate allows more; the seconds slept."""
        wait = self.debit(size)
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True)
class Throttle:
    """The buckets one stream goes through (its own rate, the node's total): all of them pay.

    The waits of the buckets are not added up: a stream waits for the slowest of them, and
    the others' debt runs off meanwhile.
    """

    buckets: Sequence[TokenBucket]
    sleep: Callable[[float], None] = time.sleep

    def slice_size(self, largest: int) -> int:
        """How many bytes to move before asking again: short sleeps, an even rate."""
        if not self.buckets:
            return largest
        slowest = min(bucket.rate for bucket in self.buckets)
        smallest_burst = min(bucket.burst for bucket in self.buckets)
        return max(MIN_SLICE, min(largest, smallest_burst, int(slowest * SLICE_SECONDS)))

    def take(self, size: int) -> float:
        """``size`` bytes moved: pay every bucket, sleep for the longest debt; the seconds slept."""
        wait = max((bucket.debit(size) for bucket in self.buckets), default=0.0)
        if wait > 0:
            self.sleep(wait)
        return wait


@dataclass(frozen=True)
class BandwidthLimit:
    """The validated limits of one module run, in bytes/s (None: none).

    ``per_transfer``: each stream's own rate. ``per_node``: the total of all streams of this
    process, the process's ONE shared bucket (two separate runs on one node each have their own).
    """

    per_transfer: int | None = None
    per_node: int | None = None

    @classmethod
    def from_options(cls, per_transfer: object, per_node: object) -> BandwidthLimit:
        """From the option values (``bwlimit``, ``bwlimit_node``); ValueError naming the bad one."""
        return cls(parse_rate(per_transfer, "bwlimit"), parse_rate(per_node, "bwlimit_node"))

    @property
    def limited(self) -> bool:
        return self.per_transfer is not None or self.per_node is not None


class NodeThrottle:
    """Hands each stream its Throttle: a fresh per-transfer bucket plus the node's shared one."""

    def __init__(
        self,
        limit: BandwidthLimit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self.node_bucket = TokenBucket(limit.per_node, clock=clock, sleep=sleep) if limit.per_node is not None else None

    def for_stream(self) -> Throttle | None:
        """The throttle of one new stream; None when nothing limits it (the relay then runs free)."""
        buckets = []
        if self.limit.per_transfer is not None:
            buckets.append(TokenBucket(self.limit.per_transfer, clock=self._clock, sleep=self._sleep))
        if self.node_bucket is not None:
            buckets.append(self.node_bucket)
        return Throttle(tuple(buckets), self._sleep) if buckets else None
