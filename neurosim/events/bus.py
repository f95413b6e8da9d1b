"""In-process async publish/subscribe with bounded queues.

Publishing never waits: every subscriber has its own bounded queue, and when a slow
subscriber's queue is full the event is dropped for that subscriber only and counted
(``Subscription.dropped``, ``EventBus.dropped``). The simulation is never blocked by a
reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's bounded queue; iterate with ``async for`` or call ``get()``."""

    def __init__(self, bus: EventBus[T], maxsize: int, on_drop: Callable[[T], None] | None = None) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=maxsize)
        self._on_drop = on_drop
        self.dropped = 0
        self.closed = False

    def _offer(self, event: T) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(event)
            return False

    async def get(self) -> T:
        """The next event, waiting for one."""
        return await self._queue.get()

    def get_nowait(self) -> T:
        """The next event; ``asyncio.QueueEmpty`` if none is waiting."""
        return self._queue.get_nowait()

    def pending(self) -> int:
        """Events waiting in this subscription's queue."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop receiving: the bus forgets this subscription."""
        self.closed = True
        self._bus._unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while not self.closed:
            yield await self._queue.get()


class EventBus(Generic[T]):
    """Fan-out of events to subscribers, each with a bounded queue (default 1024)."""

    def __init__(self, default_maxsize: int = 1024) -> None:
        if default_maxsize < 1:
            raise ValueError(f"default_maxsize must be >= 1, got {default_maxsize}")
        self.default_maxsize = default_maxsize
        self._subscribers: list[Subscription[T]] = []
        self.published = 0
        self.dropped = 0

    def subscribe(self, maxsize: int | None = None, *, on_drop: Callable[[T], None] | None = None) -> Subscription[T]:
        """A new subscriber queue of ``maxsize`` events; ``on_drop(event)`` is called for each one it drops."""
        size = self.default_maxsize if maxsize is None else maxsize
        if size < 1:
            raise ValueError(f"maxsize must be >= 1, got {size}")
        sub: Subscription[T] = Subscription(self, size, on_drop)
        self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription[T]) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def publish(self, event: T) -> None:
        """Hand ``event`` to every subscriber without waiting; full queues drop and count it."""
        self.published += 1
        for sub in list(self._subscribers):
            if not sub._offer(event):
                self.dropped += 1

    @property
    def subscribers(self) -> int:
        """Number of open subscriptions."""
        return len(self._subscribers)

    @property
    def pending(self) -> int:
        """Events waiting in subscribers' queues."""
        return sum(sub._queue.qsize() for sub in self._subscribers)

    async def give_way(self, *, turns: int = 8, limit: float = 0.05) -> None:
        """Let the event loop turn until every subscriber has taken what is queued, then
        ``turns`` more (a publisher needs a few to send a message), for at most ``limit``
        seconds; nothing when nobody is subscribed. Called after an event that should leave
        at once (a phase change) and before work that holds the loop."""
        if not self._subscribers:
            return
        deadline = time.monotonic() + limit
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0)
        for _ in range(turns):
            await asyncio.sleep(0)
