"""A work queue of object keys with client-go semantics, for asyncio.

A key waits in the queue at most once however often it is added; a key being processed is
not handed to a second worker, and if it is added meanwhile it comes back once the first
worker is done. So any number of triggers (spec changes, node changes, pod events, resyncs)
collapse into as few reconciles as the state needs, never two at once for one object.

Rate-limited requeue, as client-go's: ``add_rate_limited`` brings a key back after a delay that
doubles with each failure in a row (``Backoff``: ``base_s`` up to ``max_s``), ``forget`` ends the
streak. A refused eviction or a refused pod is asked again that way, never in a tight loop; the
same ``Backoff`` spaces the attempts at one refused eviction (``kube.Evictor``).
"""

import asyncio
from collections.abc import Hashable


class Backoff:
    """Per-key delays that double with each failure in a row, 2, 4, 8 ... up to 60 s by default
    (client-go's per-item exponential rate limiter). Not locked: its owner serialises access."""

    def __init__(self, base_s: float = 2.0, max_s: float = 60.0) -> None:
        self._failures: dict[Hashable, int] = {}
        self._base_s, self._max_s = base_s, max_s

    def failed(self, key: Hashable) -> float:
        """Count a failure of ``key``; returns how long to wait before its next try."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(self._max_s, self._base_s * 2.0**failures)

    def forget(self, key: Hashable) -> None:
        """``key`` succeeded: its next failure starts from ``base_s`` again."""
        self._failures.pop(key, None)


class WorkQueue:
    def __init__(self, base_s: float = 2.0, max_s: float = 60.0) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._backoff = Backoff(base_s, max_s)

    def add_after(self, key: Hashable, delay_s: float) -> None:
        asyncio.get_running_loop().call_later(delay_s, self.add, key)

    def add_rate_limited(self, key: Hashable) -> float:
        """Add ``key`` again after its backoff; returns the delay chosen."""
        delay_s = self._backoff.failed(key)
        self.add_after(key, delay_s)
        return delay_s

    def forget(self, key: Hashable) -> None:
        """The key succeeded: its next failure starts the backoff from the beginning."""
        self._backoff.forget(key)

    def add(self, key: Hashable) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    async def get(self) -> Hashable:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def __len__(self) -> int:
        return self._queue.qsize()
