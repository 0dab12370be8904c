"""Event-time order: a bounded out-of-orderness watermark with allowed lateness, and the tick grid.

Messages reach the engine in arrival order, which depends on the network, the hosts and the
speed of the clock; the rules must see the same stream whatever that order was. ``Reorder``
keeps every message in a buffer keyed by (event ts, gateway id, per-gateway arrival counter).
``max_seen`` is the newest timestamp seen; the **horizon** is ``max_seen - lateness`` (never
back, and never before a flush). Everything stamped at or before the horizon is released to
the rules in key order.

Ticks: time-based rules are judged at multiples of ``tick_ms`` (the grid), never at the instant
a message happened to arrive. A tick at grid point ``g`` runs after every message stamped at or
before ``g`` and before the first one stamped after it: it is run just before that message is
released. When a quiet stretch passes several grid points, only the last grid point before the
next message is ticked (one tick judges every rule: about 1,000 in the demo town; a day without
messages would otherwise be 17,280 ticks at 5 s). Which grid points are ticked is so a function
of the event-time-ordered stream alone. ``flush(until)`` releases everything stamped at or
before ``until`` and ticks the last grid point at or before it (the end of a stream).

A message older than what was already released is *late*: stamped before the horizon (it came
more than the allowed lateness after a newer one), at or before a tick or flush already done, or
keyed below the last message released. It is handed over at once, counted, never dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

NEVER = -(2**62)

Key = tuple[int, str, int]
Handler = Callable[[Any, Any], None]
"""``handler(message, out)``: applies one released message."""


class Reorder:
    """The reorder buffer and the tick grid; ``on_tick(now_ms, out)`` judges time at a grid point."""

    def __init__(self, lateness_ms: int, tick_ms: int, on_tick: Callable[[int, Any], None]) -> None:
        if tick_ms < 1 or lateness_ms < 0:
            raise ValueError(f"tick {tick_ms} ms must be >= 1, lateness {lateness_ms} ms >= 0")
        self.lateness_ms = lateness_ms
        self.tick_ms = tick_ms
        self.on_tick = on_tick
        self.max_seen = NEVER
        self.settled = NEVER
        """Event time up to which the stream is done: the last tick, flush or restored horizon."""
        self.last_key: Key | None = None
        self.last_tick: int | None = None
        self.late = 0
        self._heap: list[tuple[int, str, int, Handler, Any]] = []
        self._arrivals: dict[str, int] = {}

    @property
    def horizon(self) -> int:
        return max(self.max_seen - self.lateness_ms, self.settled)

    @property
    def pending(self) -> int:
        """Messages waiting in the buffer for the horizon."""
        return len(self._heap)

    def push(self, ts: int, gateway: str, handler: Handler, message: Any, out: Any) -> None:
        """One incoming message: buffered and released in order, or handed over at once if late."""
        n = self._arrivals.get(gateway, 0)
        self._arrivals[gateway] = n + 1
        key = (ts, gateway, n)
        if (ts < self.max_seen - self.lateness_ms or ts <= self.settled
                or (self.last_key is not None and key < self.last_key)):
            self.late += 1
            handler(message, out)
            return
        heapq.heappush(self._heap, (ts, gateway, n, handler, message))
        self.max_seen = max(self.max_seen, ts)
        self.release(self.max_seen - self.lateness_ms, out)

    def release(self, until: int, out: Any) -> None:
        """Hand over, in key order, every buffered message stamped at or before ``until``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            ts, gateway, n, handler, message = heapq.heappop(heap)
            self._tick_before(ts, out)
            self.last_key = (ts, gateway, n)
            handler(message, out)

    def _tick_before(self, ts: int, out: Any) -> None:
        """Tick the last grid point before ``ts`` unless done: before the first message, none."""
        g = (ts - 1) // self.tick_ms * self.tick_ms
        if self.last_tick is None:
            self.last_tick = max(g, self.settled)
            return
        if g > self.last_tick:
            self._tick(g, out)

    def _tick(self, g: int, out: Any) -> None:
        self.last_tick = g
        self.settled = max(self.settled, g)
        self.on_tick(g, out)

    def flush(self, until: int, out: Any) -> None:
        """Release everything stamped at or before ``until``; tick the last grid point at or
        before it; messages stamped at or before ``until`` that arrive later are late."""
        self.release(until, out)
        g = until // self.tick_ms * self.tick_ms
        if (self.last_key is not None and self.last_tick is not None and g > self.last_tick
                and g >= self.last_key[0]):
            self._tick(g, out)
        self.settled = max(self.settled, until)

    def settle(self, until: int) -> None:
        """Event time up to ``until`` is done (an engine restarted with its stored horizon, a
        will stamped with the horizon): later messages stamped at or before it are late."""
        self.settled = max(self.settled, until)
