"""Lockstep simulated time: a time keeper grants instants, participants report when done.

Conservative co-simulation (as HLA time management and mosaik's scheduler do it): simulated
time moves only when every participant whose output depends on timing has finished with the
current instant, so a run gives the same readings, in the same order, on a fast or a loaded
machine. Only its wall time differs. The protocol (written down in docs/wire-format.md):

1. Each participant publishes ``TimeDone`` with ``step = -1`` once it is ready, with the
   earliest instant it has work at (``next_ms``).
2. The keeper publishes ``TimeGrant(step, stage="field", t_ms)`` (retained): the simulator
   steps its physics to ``t_ms`` and answers ``TimeDone``. Then ``TimeGrant(step,
   stage="edge", t_ms)``: each edge agent works every instant of its own up to ``t_ms`` in
   order (the polls due, the health reports between, each at its own time), publishes them,
   and answers ``TimeDone`` once the broker has acknowledged every message it sent.
3. The keeper grants the next instant the field is read at (an edge's ``next_read_ms``, the
   simulator's ``next_ms``): instants of health reports only cost no grant. Never past the
   run's end, no faster than a cap if one is set, and no further ahead of the last grant or
   of the downstream components' ``Progress`` than a bound.

A participant's :class:`LockstepClock` tracks the tasks that sleep on it: the instant is done
when every task it woke has gone back to sleep (or ended) and the component's ``drain`` hook
returned. Components that only consume (collector, rules engine) follow the grants without
taking part: their clock's ``now`` is the last instant granted, and nothing they conclude
depends on it (they work on event time).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aquavolt.errors import WireError
from aquavolt.mqtt import Inbound, Transport
from aquavolt.settings import MqttSettings
from aquavolt.wire import TimeDone, TimeGrant, TimeStage, Topics, decode, encode

log = logging.getLogger("aquavolt.lockstep")

Hook = Callable[[], Awaitable[None]]


def _ms(t: float) -> int:
    """Seconds to the millisecond an instant is granted at (never before ``t``)."""
    return math.ceil(round(t * 1000, 3))


class LockstepClock:
    """Simulated time granted over MQTT. ``participant`` None: a follower."""

    lockstep = True

    def __init__(self, start: float, run: str, settings: MqttSettings,
                 participant: str | None = None, stage: TimeStage = TimeStage.EDGE) -> None:
        self.start = float(start)
        self.run = run
        self.settings = settings
        self.participant = participant
        self.stage = stage
        self.topics = Topics(settings.prefix)
        self.t_ms: int | None = None  # last instant granted to this stage (None before the first)
        self.step = -1
        self.on_grant: Hook | None = None
        """Called at each grant before the woken tasks run (the simulator steps its model)."""
        self.drain: Hook | None = None
        """Awaited once the woken tasks are asleep again (the edge waits for its PUBACKs)."""
        self._sleepers: list[tuple[int, int, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        self._n = 0
        self._quiet: set[int] = set()  # sleepers that read nothing from the field when woken
        self._awake: set[asyncio.Task[Any]] = set()
        self._tracked: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._finishing: asyncio.Task[None] | None = None
        self._pending: TimeGrant | None = None
        self.grants = 0
        name = participant or f"follower-{uuid.uuid4().hex[:8]}"
        cid = f"aquavolt-time-{name}-{settings.prefix.replace('/', '_')}"[:120]
        self.transport = Transport(settings, cid,
                                   subscriptions=[(self.topics.time_grant, 1)], name="time.mqtt")
        self.transport.on_message = self._on_message
        self.transport.on_connected.append(self._on_connected)
        self.connected = self.transport.connected
        if participant is None:
            self.transport.start()  # a follower's grants are read before its loop exists

    # ------------------------------------------------------------ Clock protocol
    def now(self) -> float:
        return self.start if self.t_ms is None else self.t_ms / 1000

    def now_ms(self) -> int:
        return _ms(self.start) if self.t_ms is None else self.t_ms

    def monotonic(self) -> float:
        """Pacing of retries: simulated time, since no wall time passes in an instant."""
        return self.now()

    def to_wall(self, seconds: float) -> float:
        return 0.0

    def spec(self) -> str:
        from datetime import UTC, datetime

        start = datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"lockstep,start={start},run={self.run}"

    async def sleep(self, seconds: float, reads_field: bool = True) -> None:
        await self.sleep_until(self.now() + max(0.0, seconds), reads_field)

    async def sleep_until(self, t: float, reads_field: bool = True) -> None:
        """Wait until an instant at or after ``t`` is granted. A participant's task that
        sleeps here is idle for the keeper; a follower's sleep only follows the grants.
        ``reads_field`` False: the task reads no device when it wakes (a health report), so
        its instant needs no field stage (``next_read_ms``)."""
        self._attach()
        key = _ms(t)
        task = asyncio.current_task()
        if self.t_ms is not None and key <= self.t_ms:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._sleepers, (key, self._n, fut, task))
        if not reads_field:
            self._quiet.add(self._n)
        if task is not None and task in self._awake:
            self._awake.discard(task)
            if not self._awake:
                self._idle.set()
        await fut

    # ------------------------------------------------------------ participant
    def _attach(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self.participant is not None:
                self.transport.start(self._loop)
            else:
                self.transport.attach(self._loop)

    def ready(self) -> None:
        """The component has started every task that sleeps on this clock: it may be granted
        time. (Called on the loop, after the tasks have had one turn to go to sleep.)"""
        self._attach()
        self._ready = True
        if self.connected.is_set():
            self._done(-1)
        if self._pending is not None:
            nxt, self._pending = self._pending, None
            self._grant(nxt)

    def next_ms(self) -> int | None:
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            self._quiet.discard(heapq.heappop(self._sleepers)[1])
        return self._sleepers[0][0] if self._sleepers else None

    def next_read_ms(self) -> int | None:
        """The earliest instant a sleeper that reads the field is due at."""
        return min((k for k, n, fut, _t in self._sleepers if n not in self._quiet and not fut.done()),
                   default=None)

    def _on_connected(self, _session_present: bool) -> None:
        if self.participant is not None:
            self._reconnected()

    def _reconnected(self) -> None:
        if self._ready and self._finishing is None:
            self._done(self.step)

    def _on_message(self, msg: Inbound) -> None:
        """In the loop once attached (a follower's before: paho's thread, where it only
        moves ``t_ms`` forward)."""
        try:
            grant = decode(msg.payload, TimeGrant)
        except WireError as exc:
            log.error("time: ignored a bad grant on %s: %s", msg.topic, exc)
            return
        if grant.run != self.run:
            return  # a retained grant of another run on the same broker
        if self.participant is None:
            if grant.stage is TimeStage.EDGE and (self.t_ms is None or grant.t_ms > self.t_ms):
                self.t_ms = grant.t_ms
                if self._loop is not None:
                    self._wake_due()
            return
        if grant.stage is not self.stage or self._loop is None:
            return
        self._grant(grant)

    def _grant(self, grant: TimeGrant) -> None:
        if grant.step <= self.step and self.step >= 0:
            if grant.step == self.step and self._finishing is None:
                self._done(self.step)  # the keeper did not get our answer: say it again
            return
        if self._finishing is not None or not self._ready:
            self._pending = grant  # finish the current instant (or start) first
            return
        self.step = grant.step
        if self.stage is not TimeStage.EDGE:
            self.t_ms = grant.t_ms  # an edge moves through its own instants up to it (_work)
        self.grants += 1
        self._finishing = asyncio.ensure_future(self._finish(grant))

    async def _finish(self, grant: TimeGrant) -> None:
        try:
            await self._work(grant)
        except Exception:  # a bug here must not stall the whole run: said loudly, then done
            log.exception("time: step %d at %d failed", grant.step, grant.t_ms)
        self._done(grant.step)
        if self._pending is not None:
            nxt, self._pending = self._pending, None
            self._grant(nxt)

    async def _work(self, grant: TimeGrant) -> None:
        try:
            if self.on_grant is not None:
                await self.on_grant()
            if self.stage is TimeStage.EDGE:
                # every instant of its own up to the grant, in order, each at its own time: the
                # keeper grants only instants the field is read at, and the quiet ones between
                # (health reports) cost no round trip; the broker has them all before the answer
                while (key := self.next_ms()) is not None and key <= grant.t_ms:
                    self.t_ms = key if self.t_ms is None else max(key, self.t_ms)
                    await self._run_due(key, drain=False)
                self.t_ms = grant.t_ms if self.t_ms is None else max(grant.t_ms, self.t_ms)
            await self._run_due(grant.t_ms, drain=True)
        finally:
            self._finishing = None

    async def _run_due(self, t_ms: int, drain: bool) -> None:
        """Wake the sleepers due at or before ``t_ms``; return once every task woken has gone
        back to sleep or ended (and, with ``drain``, the component's drain hook returned)."""
        while self._sleepers and self._sleepers[0][0] <= t_ms:
            _key, n, fut, task = heapq.heappop(self._sleepers)
            self._quiet.discard(n)
            if fut.done():
                continue
            if task is not None:
                self._woke(task)
            fut.set_result(None)
        # the woken tasks: known once they run; give them their turn, then wait for each
        # to sleep again or end
        await asyncio.sleep(0)
        while True:
            await self._wait_idle()
            if drain and self.drain is not None:
                await self.drain()
            await asyncio.sleep(0)
            if not self._awake:
                break

    def _wake_due(self) -> None:
        """A follower's sleepers due at the instant granted last."""
        while self._sleepers and self.t_ms is not None and self._sleepers[0][0] <= self.t_ms:
            fut = heapq.heappop(self._sleepers)[2]
            if not fut.done():
                fut.set_result(None)

    async def _wait_idle(self) -> None:
        while self._awake:
            self._idle.clear()
            await self._idle.wait()

    def _woke(self, task: asyncio.Task[Any]) -> None:
        """Track a task the clock woke until it sleeps again or ends."""
        self._awake.add(task)
        if task not in self._tracked:
            self._tracked.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tracked.discard(task)
        self._awake.discard(task)
        if not self._awake:
            self._idle.set()

    def _done(self, step: int) -> None:
        assert self.participant is not None
        t = self.t_ms if self.t_ms is not None else _ms(self.start)
        msg = TimeDone(run=self.run, participant=self.participant, step=step, stage=self.stage,
                       t_ms=t, next_ms=self.next_ms(),
                       next_read_ms=self.next_read_ms() if self.stage is TimeStage.EDGE else None)
        self.transport.publish(self.topics.time_done(self.participant), encode(msg), qos=1)

    def close(self) -> None:
        self.transport.stop()
