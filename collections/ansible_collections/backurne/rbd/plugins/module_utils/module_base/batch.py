# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# One module task works through a whole batch of images with a bounded pool of workers; an
# image that fails must fail alone, never take the batch (and the other images' results) down.
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class BatchError(RuntimeError):
    """Raised after the whole batch ran when items failed and no on_error mapping was given."""

    def __init__(self, results: list[object], errors: dict[int, BaseException]) -> None:
        self.results = results
        self.errors = errors
        first = min(errors)
        super().__init__(f"{len(errors)} of {len(results)} batch items failed; item {first}: {errors[first]!r}")


def run_batch(
    items: Sequence[T],
    fn: Callable[[T], R],
    workers: int,
    on_error: Callable[[T, BaseException], R] | None = None,
) -> list[R]:
    """fn over items with at most `workers` threads; results in input order.

    fn should return a failure result itself; an exception escaping it still only fails its
    own item: it is mapped through on_error(item, exc), or, without on_error, collected and
    raised as one BatchError once every other item has finished.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not items:
        return []

    def guarded(index: int) -> tuple[bool, object]:
        try:
            return True, fn(items[index])
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as exc:
            # Even SystemExit (a helper calling sys.exit) must fail only this item.
            return False, exc

    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="backurne") as pool:
        outcomes = list(pool.map(guarded, range(len(items))))

    results: list[object] = []
    errors: dict[int, BaseException] = {}
    for index, (ok, value) in enumerate(outcomes):
        if ok:
            results.append(value)
            continue
        exc = cast(BaseException, value)
        if on_error is None:
            errors[index] = exc
            results.append(None)
            continue
        results.append(on_error(items[index], exc))
    if errors:
        raise BatchError(results, errors)
    return results  # type: ignore[return-value]
