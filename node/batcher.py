"""Micro-batching: a bounded queue between the MQTT thread and the inference thread.

A lone tweet is classified at once. When tweets arrive faster than the model runs they
pile up in the queue and the next batch takes all of them (up to ``max_batch``); once a
batch holds more than one tweet it may wait up to ``max_wait_s`` for more to fill it.
The queue is bounded so that a flood blocks the receiving side instead of eating RAM.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# Padded lengths a batch is split into; a tweet is padded at most to its bucket's bound,
# so one long tweet does not make a whole batch of short ones expensive.
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


class Batcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float, maxsize: int):
        if max_batch < 1 or maxsize < 1:
            raise ValueError("max_batch and the queue size must be at least 1")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.maxsize = maxsize
        self._queue: queue.Queue[T] = queue.Queue(maxsize)

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Enqueue; False if the queue stayed full for ``timeout`` seconds."""
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            return False
        return True

    def depth(self) -> int:
        return self._queue.qsize()

    def next_batch(self, timeout: float) -> list[T]:
        """Up to ``max_batch`` items; [] if nothing arrived within ``timeout`` seconds."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            # Nothing queued: a lone tweet goes now; a growing batch may wait a little.
            remaining = deadline - time.monotonic()
            if len(batch) == 1 or remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch


def bucket_by_length(
    items: Sequence[T], length: Callable[[T], int], max_tokens: int | None = None
) -> list[list[T]]:
    """Split items into groups of similar token length, shortest first.

    With ``max_tokens`` a group is cut further so that rows x padded length stays within
    it (at least one item per group): the interpreter's working memory grows with the
    padded batch, and this bound keeps the node's RSS flat under load.
    """
    groups: dict[int, list[T]] = {}
    for item in items:
        n = length(item)
        bound = next((b for b in LENGTH_BUCKETS if n <= b), n)
        groups.setdefault(bound, []).append(item)
    out: list[list[T]] = []
    for bound in sorted(groups):
        group = groups[bound]
        rows = max(1, max_tokens // bound) if max_tokens else len(group)
        out.extend(group[i : i + rows] for i in range(0, len(group), rows))
    return out
