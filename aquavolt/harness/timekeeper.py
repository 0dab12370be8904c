"""The time keeper of a lockstep run, and the watcher of every component's progress.

:class:`Watch` follows ``{prefix}/progress/+`` (readiness and event time processed) and, in
a lockstep run, ``{prefix}/time/done/+``. :class:`TimeKeeper` grants the instants (protocol
in :mod:`aquavolt.lockstep` and docs/wire-format.md): the field stage, then the edge stage,
then the next instant the field is read at (the edges work their quiet instants within that
grant), never more than ``max_ahead_s`` of event time past the last grant or ahead of the
slowest downstream component, and, with a ``cap``, no faster than that many simulated
seconds per wall second.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aquavolt.errors import ServiceError, WireError
from aquavolt.mqtt import Inbound, Transport
from aquavolt.settings import MqttSettings
from aquavolt.wire import Progress, TimeDone, TimeGrant, TimeStage, Topics, decode, encode

log = logging.getLogger("aquavolt.timekeeper")

WAIT_REPORT_S = 30.0
"""Wall seconds a grant may wait for its participants before the keeper names them."""


class Watch:
    """Progress and time reports of every component, from MQTT (a paho thread)."""

    def __init__(self, settings: MqttSettings, client_id: str, run: str | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self.run = run
        self.progress: dict[str, Progress] = {}
        self.done: dict[str, TimeDone] = {}
        self.done_at: dict[str, float] = {}  # wall (monotonic) time of each one's last TimeDone
        self.cond = threading.Condition()
        self.transport = Transport(settings, client_id, name="timekeeper.mqtt", subscriptions=[
            (self.topics.all_progress, 1), (self.topics.all_time_done, 1)])
        self.transport.on_message = self._on_message  # in paho's thread, under ``cond``
        self.bad = 0

    def _on_message(self, msg: Inbound) -> None:
        try:
            if "/time/done/" in msg.topic:
                d = decode(msg.payload, TimeDone)
                if self.run is not None and d.run != self.run:
                    return
                with self.cond:
                    self.done[d.participant] = d
                    self.done_at[d.participant] = time.monotonic()
                    self.cond.notify_all()
            else:
                p = decode(msg.payload, Progress)
                with self.cond:
                    self.progress[p.component] = p
                    self.cond.notify_all()
        except WireError as exc:
            self.bad += 1
            log.warning("ignored a bad message on %s: %s", msg.topic, exc)

    def start(self, timeout_s: float = 10.0) -> None:
        self.transport.start()
        if not self.transport.wait_connected(timeout_s):
            self.transport.stop()
            raise ServiceError(f"no SUBACK from MQTT {self.settings.host}:{self.settings.port}")

    def stop(self) -> None:
        self.transport.stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.transport.publish(topic, payload, qos=1, retain=retain)

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (on messages, not on a timer) until ``predicate`` holds; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def ready(self, components: Iterable[str]) -> list[str]:
        """The components that have not said they are ready."""
        with self.cond:
            return [c for c in components if not (c in self.progress and self.progress[c].ready)]

    def event_ms(self, component: str) -> int | None:
        with self.cond:
            p = self.progress.get(component)
            return p.event_ms if p is not None else None


@dataclass
class KeeperStats:
    steps: int = 0
    field_steps: int = 0
    """Instants the field stage was granted at: those some edge reads the field at (a poll),
    those the simulator asked for, the first and the last."""
    waits_downstream: int = 0
    wall_s: float = 0.0
    simulated_s: float = 0.0
    busy_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds from each grant to each participant's answer, summed: who sets the pace."""

    @property
    def ratio(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else 0.0


class TimeKeeper:
    """Grants simulated instants to ``participants`` (name -> stage), from ``start_ms``."""

    def __init__(self, watch: Watch, run: str, start_ms: int, participants: dict[str, TimeStage],
                 downstream: Iterable[str] = ("collector", "rules"), cap: float | None = None,
                 max_ahead_s: float = 3600.0) -> None:
        self.watch = watch
        self.run = run
        self.t_ms = start_ms
        self.start_ms = start_ms
        self.participants = dict(participants)
        self.downstream = list(downstream)
        self.cap = cap
        self.max_ahead_ms = int(max_ahead_s * 1000)
        self.step = 0
        self.stats = KeeperStats()
        self.stopping = threading.Event()
        self.waiting_for: list[str] = []
        self._wall0: float | None = None

    def _stage(self, stage: TimeStage) -> list[str]:
        return [p for p, s in self.participants.items() if s is stage]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Every participant announced (TimeDone step -1) and every downstream component ready."""
        names = list(self.participants)

        def ok() -> bool:
            return all(n in self.watch.done for n in names) and not self.watch.ready(self.downstream)

        if not self.watch.wait(ok, timeout_s):
            missing = [n for n in names if n not in self.watch.done] + self.watch.ready(self.downstream)
            raise ServiceError(f"not ready after {timeout_s:.0f} s: {', '.join(missing)}")

    def _grant(self, stage: TimeStage) -> None:
        names = self._stage(stage)
        if not names:
            return
        msg = TimeGrant(run=self.run, step=self.step, stage=stage, t_ms=self.t_ms)
        sent = time.monotonic()
        self.watch.publish(self.watch.topics.time_grant, encode(msg), retain=True)

        def all_done() -> bool:
            d = self.watch.done
            return all(n in d and d[n].step >= self.step for n in names)

        while not self.watch.wait(all_done, WAIT_REPORT_S):
            if self.stopping.is_set():
                return
            self.waiting_for = [n for n in names if n not in self.watch.done
                                or self.watch.done[n].step < self.step]
            log.warning("step %d (%s): waiting for %s", self.step, stage, ", ".join(self.waiting_for))
        self.waiting_for = []
        busy = self.stats.busy_s
        for n in names:
            busy[n] = busy.get(n, 0.0) + max(0.0, self.watch.done_at.get(n, sent) - sent)

    def _next(self, until_ms: int) -> int:
        """The next instant to grant: the earliest an edge reads the field at or a field
        participant asked for. An edge's quiet instants (health reports) before it are worked
        within that grant, each at its own time; never more than ``max_ahead_s`` at once, so
        the downstream components, which follow the edges' messages, can keep within it."""
        nxt = self._field_due()
        if nxt is None:
            nxt = until_ms
        return min(max(nxt, self.t_ms + 1), until_ms, self.t_ms + max(1, self.max_ahead_ms))

    def _field_due(self) -> int | None:
        """The earliest instant the field must be stepped to: an edge's next read (a poll)
        or an instant a field participant asked for. An instant of health reports only is
        not one: the model steps in fixed ticks, so stepping it later to the next instant
        read gives the same field."""
        with self.watch.cond:
            due = [d.next_read_ms if s is TimeStage.EDGE else d.next_ms
                   for n, s in self.participants.items() if (d := self.watch.done.get(n)) is not None]
        return min((t for t in due if t is not None), default=None)

    def _downstream_ok(self, t_ms: int) -> bool:
        for c in self.downstream:
            ev = self.watch.event_ms(c)
            if ev is None:
                if t_ms - self.start_ms > self.max_ahead_ms:
                    return False
            elif t_ms - ev > self.max_ahead_ms:
                return False
        return True

    def _may_grant(self, t_ms: int) -> bool:
        return self._downstream_ok(t_ms) or self.stopping.is_set()

    def run_until(self, until_ms: int) -> None:
        """Grant instants up to and including ``until_ms`` (or until :meth:`stop`)."""
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        while not self.stopping.is_set():
            read_at = self._field_due()
            if self.step == 0 or self.t_ms >= until_ms or (read_at is not None and self.t_ms >= read_at):
                self._grant(TimeStage.FIELD)
                self.stats.field_steps += 1
            self._grant(TimeStage.EDGE)
            self.stats.steps += 1
            self.stats.simulated_s = (self.t_ms - self.start_ms) / 1000
            self.stats.wall_s = time.monotonic() - self._wall0
            if self.t_ms >= until_ms or self.stopping.is_set():
                return
            nxt = self._next(until_ms)
            if not self._downstream_ok(nxt):
                self.stats.waits_downstream += 1
                self.watch.wait(functools.partial(self._may_grant, nxt), 3600.0)
            if self.cap:
                due = self._wall0 + (nxt - self.start_ms) / 1000 / self.cap
                self.stopping.wait(max(0.0, due - time.monotonic()))
            self.t_ms = nxt
            self.step += 1

    def stop(self) -> None:
        self.stopping.set()
        with self.watch.cond:
            self.watch.cond.notify_all()
