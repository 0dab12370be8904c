"""The collector's pipeline: MQTT inbox -> line protocol -> batches -> InfluxDB -> acks.

::

    paho thread ──inbox──▶ convert (Router) ──▶ current batch ──▶ write task (≤ N at once)
                                  │ bad payload                       │ 2xx: ack its messages
                                  ▼                                   │ refused points:
                             dead letter ◀────────────────────────────┘ dead letter, then ack

A message is acknowledged only after every one of its points was accepted by InfluxDB (or
dead-lettered with the reason): a crash at any moment leaves it unacknowledged, and the
broker delivers it again. Duplicates overwrite themselves (same series, same timestamp).

End to end (:mod:`collector.acks`): per gateway, the highest ``seq`` written without a gap is
published retained on ``{prefix}/gw/{gw}/stored``; the gateway keeps its data until then. A
gap that lasts is asked again on ``{prefix}/gw/{gw}/resend``; the gateway answers on
``resent``, naming what it no longer holds (counted as lost, and logged). In a share group
the members tell each other what they stored (:mod:`collector.group`) and each publishes
the marks of the union; one of them asks the gateways for the gaps.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from aquavolt import schema
from aquavolt.backoff import Backoff
from aquavolt.clock import ENV as CLOCK_ENV
from aquavolt.clock import Clock, RealClock, clock_from_spec, parse_instant
from aquavolt.collector.acks import Acks, seq_of
from aquavolt.collector.config import CollectorConfig
from aquavolt.collector.convert import Kind, Router, TooFarAhead, subscriptions
from aquavolt.collector.deadletter import DeadLetters
from aquavolt.collector.group import Group
from aquavolt.collector.metrics import MetricsServer, Stats
from aquavolt.collector.rollups import EventTimeRollups
from aquavolt.collector.source import Inbound, MqttSource
from aquavolt.collector.sparkplug import SparkplugIntake
from aquavolt.collector.writer import InfluxWriter, gzip_level_for
from aquavolt.errors import WireError
from aquavolt.lockstep import LockstepClock
from aquavolt.logs import OnceLogger
from aquavolt.progress import ProgressReporter
from aquavolt.sdnotify import Notifier
from aquavolt.settings import InfluxSettings, MqttSettings
from aquavolt.wire import Topics

log = logging.getLogger("aquavolt.collector")
ROLLUP_TIMEOUT_S = 120.0
"""Wall seconds a rollup's SELECT ... INTO may take: it reads an hour (a day) of the whole
field. With the writes' 10 s, the demo day's first hour timed out on a busy machine, and each
retry covered more hours than the last: no rollup was ever made again."""
_JOURNALS = frozenset(k for k in Kind if k.value in schema.EVENT_MEASUREMENTS)
"""Their lines go to the journals' retention policy (``schema.RP_EVENTS``): alarm events and
customer alerts (each kind is named after its measurement)."""



@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # first line of each origin
    topics: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    acks: list[tuple[str, int, int]] = field(default_factory=list)  # (gateway, seq, bd_seq) of data
    journal: list[tuple[str, str]] = field(default_factory=list)  # (topic, line): schema.RP_EVENTS
    opened: float = 0.0
    max_ts_ms: int | None = None  # newest event time of the messages in it

    def seen(self, ts_ms: int) -> None:
        if self.max_ts_ms is None or ts_ms > self.max_ts_ms:
            self.max_ts_ms = ts_ms

    @property
    def points(self) -> int:
        return len(self.lines) + len(self.journal)

    def add(self, topic: str, lines: list[str], journal: bool = False) -> None:
        if not self.lines and not self.journal:
            self.opened = time.monotonic()
        if journal:
            self.journal.extend((topic, line) for line in lines)
            return
        self.starts.append(len(self.lines))
        self.topics.append(topic)
        self.lines.extend(lines)

    def topic_of(self, index: int) -> str:
        return self.topics[bisect.bisect_right(self.starts, index) - 1]


def event_clock(mqtt: MqttSettings) -> Clock:
    """The clock of ``AQUAVOLT_CLOCK`` (the wall clock without it); in a lockstep run, a
    follower of the grants on the collector's own broker: its time is the last instant
    granted."""
    spec = os.environ.get(CLOCK_ENV, "").strip()
    if spec.startswith("lockstep"):
        fields = dict(part.partition("=")[::2] for part in spec.split(",")[1:])
        if set(fields) != {"start", "run"}:
            raise ValueError(f"clock spec {spec!r}: needs lockstep,start=ISO,run=ID")
        return LockstepClock(parse_instant(fields["start"]), fields["run"], mqtt)
    return clock_from_spec(spec)


def client_id_for(cfg: CollectorConfig) -> str:
    """The configured client id, or one made at first start and kept in the state folder
    (a persistent session needs the same id after a restart)."""
    if cfg.client_id:
        return cfg.client_id
    path = cfg.state_dir / "client_id"
    if path.exists():
        return path.read_text().strip()
    cid = f"aquavolt-collector-{uuid.uuid4().hex[:12]}"
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(cid + "\n")
    return cid


class Collector:
    def __init__(self, cfg: CollectorConfig, mqtt: MqttSettings, influx: InfluxSettings) -> None:
        self.cfg = cfg
        self.influx = influx
        self.client_id = client_id_for(cfg)
        self.topics = Topics(mqtt.prefix)
        self.clock = event_clock(mqtt)
        self.router = Router(self.topics, cfg.max_future_s, self._now_ms, cfg.max_payload_bytes)
        self.stats = Stats()
        self.notifier = Notifier()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # With a shared subscription each collector sees part of every gateway's seqs: the
        # members of the group tell each other what they stored.
        self.group = Group(self.client_id, self.topics.group_stored(cfg.share_group)) \
            if cfg.share_group else None
        self.acks = Acks(self.topics, cfg.state_dir / "stored.json", group=self.group is not None)
        filters = list(subscriptions(self.topics))
        filters.append(self.topics.all_resent)
        self.spb = _sparkplug(cfg, self.topics, self.router)
        if self.spb is not None:
            filters += self.spb.filters
        self._gw_head = len(self.topics.prefix) + 4  # "{prefix}/gw/"
        self._gw_head_parts = self.topics.prefix.count("/") + 3  # "{prefix}/gw/{gw}/stored"
        self.source = MqttSource(mqtt, self.client_id, filters,
                                 share_group=cfg.share_group, session_expiry_s=cfg.session_expiry_s,
                                 direct=[self.group.topic] if self.group is not None else [],
                                 receive_maximum=cfg.receive_maximum,
                                 max_inbox=cfg.max_inbox_messages, on_arrival=self._wake.set,
                                 will=self.spb and (self.spb.state_topic, self.spb.state(False)),
                                 birth=self.spb and (self.spb.state_topic, self.spb.state(True)))
        dl_topic = self.topics.deadletter("collector")
        self.deadletters = DeadLetters(cfg.state_dir / "deadletter.jsonl",
                                       lambda data: self.source.publish(dl_topic, data),
                                       max_bytes=cfg.deadletter_max_bytes)
        self.stats.deadletters = self.deadletters.by_kind  # the same counts, live
        self.writer = InfluxWriter(influx, gzip_level=gzip_level_for(influx.url, cfg.gzip_level),
                                   max_backoff_s=cfg.max_backoff_s,
                                   on_retry=self._retried)
        self._slots = asyncio.Semaphore(cfg.max_concurrent_writes)
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch = Batch()
        # event time written: batches complete out of order, progress is the newest event
        # time of the batches written with every batch submitted before them
        self._order: collections.deque[list[Any]] = collections.deque()  # [max_ts, done]
        self.progress = ProgressReporter("collector", self.topics, self.source.publish,
                                         lambda: int(time.time() * 1000))
        self.rollups = EventTimeRollups(influx.database) if cfg.event_time_rollups else None
        self._first_ms: int | None = None
        self._rollup_task: asyncio.Task[None] | None = None
        self._once = OnceLogger(log)

    def _now_ms(self) -> int:
        """The collector's clock for the time window: the wall clock, or a simulated run's
        time (paced, or the last instant granted in lockstep) when that is ahead of it."""
        wall = time.time_ns() // 1_000_000
        return wall if isinstance(self.clock, RealClock) else max(wall, self.clock.now_ms())

    def _retried(self, _reason: str) -> None:
        self.stats.retries += 1

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics = MetricsServer(self.stats.prometheus, self.cfg.metrics_port, health=self.health)
        async with self.writer:
            if self.cfg.metrics_port:
                await metrics.start()
            schema_task = asyncio.create_task(self._ensure_schema())
            stats_task = asyncio.create_task(self._stats_loop())
            ack_task = asyncio.create_task(self._ack_loop())
            watchdog_task = asyncio.create_task(self._watchdog_loop())
            self.source.start()
            log.info("collector %s: %s -> %s (%s, database %s)", self.client_id,
                     ", ".join(self.source.filters + self.source.direct), self.influx.url, self.influx.api,
                     self.influx.database)
            try:
                await self._pump()
            finally:
                await self._shutdown(ack_task)
                self.notifier.stopping()
                for t in (schema_task, stats_task, watchdog_task):
                    t.cancel()
                await asyncio.gather(schema_task, stats_task, watchdog_task, return_exceptions=True)
                self.notifier.close()
                await metrics.stop()

    def health(self) -> tuple[bool, dict[str, object]]:
        """``/health``: connected to the broker, and no work waiting without a write for
        ``stuck_after_s`` wall seconds (InfluxDB unreachable, or writes failing)."""
        s = self.stats
        stuck = s.stuck_for()
        body: dict[str, object] = {"mqtt_connected": self.source.connected.is_set(),
                                   "backlog_messages": s.inbox + s.unacked,
                                   "pending_points": s.pending_points,
                                   "waiting_without_write_s": round(stuck, 1)}
        reasons = []
        if not self.source.connected.is_set():
            reasons.append("not connected to the broker")
        if stuck > self.cfg.stuck_after_s:
            reasons.append(f"{s.backlog():,} messages/points waiting and nothing written for {stuck:.0f} s")
        if reasons:
            body["reason"] = "; ".join(reasons)
        return not reasons, body

    async def _watchdog_loop(self) -> None:
        """systemd: READY once started (the broker connection is paho's to keep, and
        ``/health`` says whether it is up), then WATCHDOG while the loop runs: a stuck loop
        stops pinging and systemd restarts the service (``WatchdogSec=``)."""
        self.notifier.ready(f"collector {self.client_id}")
        period = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else 5.0
        while True:
            self.notifier.watchdog()
            self.stats.notify_dropped = self.notifier.dropped
            await asyncio.sleep(period)

    async def _ensure_schema(self) -> None:
        backoff = Backoff(0.5, max(0.5, self.cfg.max_backoff_s))
        while not await self.writer.ensure_schema():  # noqa: ASYNC110  # a retry pace, not an event
            await asyncio.sleep(backoff.next())

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval_s)
            self._batch.add(f"(collector {self.client_id})",
                            [self.stats.influx_line(self.client_id)])

    def _publish_acks(self) -> None:
        now_s, now_ms = time.monotonic(), int(time.time() * 1000)
        ask = True
        if self.group is not None:
            for payload in self.group.reports(self.acks.report(), now_s, now_ms):
                self.source.publish(self.group.topic, payload)
            ask = self.group.asks(now_s)
        for topic, payload, retain in self.acks.due(now_s, now_ms, ask=ask):
            self.source.publish(topic, payload, retain=retain)
        s = self.stats
        s.resend_requests, s.lost_messages = self.acks.requests, self.acks.lost
        s.lost_gaps = self.acks.gaps_lost
        try:
            self.acks.save()
        except OSError as exc:
            self._once.failure("stored marks", f"cannot save {self.acks.state_path}: {exc}")

    async def _ack_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.source.connected.is_set():
                self._publish_acks()

    def _take_ack(self, m: Inbound) -> bool:
        """A gateway's answer to a resend request (ours to read, not to store); False otherwise."""
        if m.topic.count("/") != self._gw_head_parts:
            return False
        try:
            self.acks.resent(m.payload)
        except WireError as exc:
            self.deadletters.record("malformed", m.topic, str(exc), m.payload)
        if self.acks.losses:  # in the answer's batch: it is acknowledged once they are written
            losses, self.acks.losses = self.acks.losses, []
            self._batch.add(m.topic, [schema.line(schema.DATA_LOSS, {"gateway": x.gateway},
                                                  {"messages": x.messages, "first_seq": x.first,
                                                   "last_seq": x.last}, x.ts_ms) for x in losses])
        return True

    def _take_group(self, m: Inbound) -> None:
        """Another member's report (ours to read, not to store)."""
        assert self.group is not None
        try:
            if len(m.payload) > self.cfg.max_payload_bytes:
                raise WireError(f"payload of {len(m.payload):,} bytes is larger than "
                                f"{self.cfg.max_payload_bytes:,}")
            report = self.group.take(m.payload, time.monotonic())
        except WireError as exc:
            self.deadletters.record("malformed", m.topic, str(exc), m.payload)
            return
        if report is not None:
            for gw, first, last, bd in report.ranges:
                self.acks.peer(gw, first, last, bd)

    def _birth(self, m: Inbound) -> None:
        with contextlib.suppress(orjson.JSONDecodeError):
            st = orjson.loads(m.payload)
            if type(st) is dict and st.get("state") == "online" and type(st.get("bd_seq")) is int:
                self.acks.birth(str(st.get("gateway")), st["bd_seq"])

    def _seq(self, m: Inbound, b: Batch) -> None:
        got = seq_of(m.payload)
        if got is not None:
            gw = m.topic[self._gw_head:m.topic.find("/", self._gw_head)]
            b.acks.append((gw, got[0], got[1]))

    async def _pump(self) -> None:
        flush_s = self.cfg.flush_interval_ms / 1000
        inbox = self.source.inbox
        while not self._stop.is_set():
            self._wake.clear()
            while inbox and not self._stop.is_set():
                m = inbox.popleft()
                self._take(m)
                if self._batch.points >= self.cfg.batch_points:
                    await self._submit()
                self.source.taken()
            self.source.taken()
            self._refresh_gauges()
            self._report()
            b = self._batch
            if b.points and time.monotonic() - b.opened >= flush_s:
                await self._submit()
                continue
            timeout = flush_s - (time.monotonic() - b.opened) if b.points else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.001))

    def _report(self) -> None:
        if not self.progress.is_ready:
            if self.source.subscribed.is_set():
                self.progress.ready()
            return
        while self._order and self._order[0][1]:
            ts = self._order.popleft()[0]
            if ts is not None:
                self.progress.event_ms = max(ts, self.progress.event_ms or ts)
        if self.rollups is not None and self._rollup_task is None and self.progress.event_ms is not None \
                and self._first_ms is not None:
            due = self.rollups.due(self.progress.event_ms, self._first_ms)
            if due:
                self._rollup_task = asyncio.create_task(self._roll_up(due))
        idle = not self.source.inbox and not self._batch.points and not self._tasks
        self.progress.update(None, len(self.source.inbox) + len(self._batch.messages), force=idle)

    async def _roll_up(self, due: list[tuple[str, int, str]]) -> None:
        assert self.rollups is not None
        try:
            for interval, upto, stmt in due:
                err = await self.writer.query(stmt, max(ROLLUP_TIMEOUT_S, self.influx.timeout_s))
                if err is not None:  # InfluxDB busy or restarting: tried again at the next report
                    self.stats.retries += 1
                    self._once.failure("rollups", f"rollup {interval} up to {upto} refused: {err}")
                    return
                self.rollups.ran(interval, upto)
                self._once.recovered("rollups")
        finally:
            self._rollup_task = None
            self._wake.set()  # the next interval (a day after its hours) may be due now

    def _take(self, m: Inbound) -> None:
        self.stats.messages += 1
        b = self._batch
        b.messages.append(m)
        if self.group is not None and m.topic == self.group.topic:
            self._take_group(m)
            return
        if m.topic.endswith("/resent") and self._take_ack(m):
            return
        if self.spb is not None and m.topic.startswith("spBv1.0/"):
            self._take_sparkplug(m, b)
            return
        try:
            converted = self.router.convert(m.topic, m.payload)
        except WireError as exc:
            # Acknowledged with the batch: the dead letter file holds it from now on.
            why = "future" if isinstance(exc, TooFarAhead) else "malformed"
            self.deadletters.record(why, m.topic, str(exc), m.payload)
            if m.topic.endswith("/data"):
                self._seq(m, b)  # handled: dead-lettered with its reason, not asked again
            return
        kind, lines = converted.kind, converted.lines
        if kind is Kind.DATA:
            self._seq(m, b)
        elif kind is Kind.GATEWAY_STATUS:
            self._birth(m)
        for why, reason, reading in converted.refused:  # the others of the message are kept
            self.deadletters.record(why, m.topic, reason, reading)
        if kind is Kind.DATA:
            self.stats.readings += len(lines)
        if lines:
            last = lines[-1]
            with contextlib.suppress(ValueError):
                ts = int(last[last.rfind(" ") + 1:])  # written with ms precision
                b.seen(ts)
                if self._first_ms is None and kind is Kind.DATA:
                    self._first_ms = ts
        b.add(m.topic, lines, kind in _JOURNALS)

    def _take_sparkplug(self, m: Inbound, b: Batch) -> None:
        """A Sparkplug edge node's message (``collector.sparkplug``): its lines join the batch,
        acknowledged with it, like any message's."""
        assert self.spb is not None
        got = self.spb.take(m.topic, m.payload, self._now_ms())
        for kind, reason in got.dead:
            self.deadletters.record(kind, m.topic, reason, m.payload)
        for topic, payload in got.commands:
            self.source.publish(topic, payload)
        self.stats.sparkplug_gaps, self.stats.sparkplug_rebirths = self.spb.gaps, self.spb.rebirths
        self.stats.readings += got.readings
        if got.lines:  # event time written, as _take reckons it (lines end with their ms)
            ts = max(int(line[line.rfind(" ") + 1:]) for line in got.lines)
            b.seen(ts)
            if self._first_ms is None and got.readings:
                self._first_ms = ts
        b.add(m.topic, got.lines)

    def _refresh_gauges(self) -> None:
        s = self.stats
        s.inbox = len(self.source.inbox)
        s.pending_points = self._batch.points
        s.mark_busy()

    async def _submit(self) -> None:
        batch, self._batch = self._batch, Batch()
        if not batch.messages and not batch.points:
            return
        await self._slots.acquire()
        self.stats.unacked += len(batch.messages)
        mark: list[Any] = [batch.max_ts_ms, False]
        self._order.append(mark)
        task = asyncio.create_task(self._write(batch, mark))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: Batch, mark: list[Any]) -> None:
        t0 = time.monotonic()
        try:
            refused = await self.writer.write(batch.lines)
            for index, reason in refused:
                self.deadletters.record("rejected", batch.topic_of(index), reason, batch.lines[index])
            if batch.journal:
                journal = [line for _topic, line in batch.journal]
                refused_j = await self.writer.write(journal, journal=True)
                for index, reason in refused_j:
                    self.deadletters.record("rejected", batch.journal[index][0], reason, journal[index])
                refused += refused_j
            for gw, seq, bd in batch.acks:
                self.acks.stored(gw, seq, bd)
            self.stats.acks += self.source.ack(batch.messages)
            self.stats.batch_done(batch.points - len(refused), time.monotonic() - t0)
            mark[1] = True
            self._wake.set()  # progress to report
        finally:
            self.stats.unacked -= len(batch.messages)
            self._slots.release()

    async def _shutdown(self, ack_task: asyncio.Task[None]) -> None:
        """Write what was taken in, acknowledge it, publish the marks, then leave the broker."""
        if self._rollup_task is not None:
            self._rollup_task.cancel()  # made again from the written data at the next start
        await self._submit()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self.cfg.shutdown_timeout_s)
            for t in pending:
                t.cancel()  # unacknowledged: the broker delivers them again
            await asyncio.gather(*pending, return_exceptions=True)
        ack_task.cancel()
        await asyncio.gather(ack_task, return_exceptions=True)
        if self.source.connected.is_set():
            self._publish_acks()
            if self.spb is not None:  # a clean stop sends no will: the host says it itself
                self.source.publish(self.spb.state_topic, self.spb.state(False), retain=True)
        await asyncio.to_thread(self.source.stop)
        if isinstance(self.clock, LockstepClock):
            self.clock.close()
        log.info("collector %s stopped: %d messages, %d points written, %d dead letters",
                 self.client_id, self.stats.messages, self.stats.points_written,
                 self.deadletters.count)


def _sparkplug(cfg: CollectorConfig, topics: Topics, router: Router) -> SparkplugIntake | None:
    """The Sparkplug B side, when the field file has Sparkplug edge nodes to read (sparkplug
    gateways, aquavolt gateways with northbound sparkplug)."""
    if cfg.field is None:
        return None
    from aquavolt.config import load_field

    intake = SparkplugIntake(load_field(cfg.field), topics, router, cfg.sparkplug_host_id,
                             cfg.state_dir / "sparkplug.json")
    return intake if intake.host.enabled else None


def run_collector(cfg: CollectorConfig, mqtt: MqttSettings, influx: InfluxSettings) -> int:
    async def main() -> None:
        collector = Collector(cfg, mqtt, influx)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.stop)
        await collector.run()

    asyncio.run(main())
    return 0
