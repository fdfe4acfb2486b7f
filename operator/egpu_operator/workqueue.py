"""A work queue of object keys with client-go semantics, for asyncio.

A key waits in the queue at most once however often it is added; a key being processed is
not handed to a second worker, and if it is added meanwhile it comes back once the first
worker is done. So any number of triggers (spec changes, node changes, pod events, resyncs)
collapse into as few reconciles as the state needs, never two at once for one object.
"""

import asyncio
from collections.abc import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()

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
