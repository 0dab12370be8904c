"""The running engine: MQTT in, the pure core, SQLite, MQTT out, the operator API.

One asyncio loop owns all state (core, manager, store); the paho network thread only
appends raw messages to a deque and wakes the loop. Each processing round drains the
deque, runs the core, stores the transitions in one SQLite transaction, then publishes
them: retained on ``{prefix}/alarm/{asset}/{condition}`` and on ``{prefix}/event/alarm``.

Event time moves with the messages only (``rules.eventtime``): the engine never scales
anything by the clock's acceleration. On a real-time clock (``RealClock``) alone, an idle
engine flushes the reorder buffer up to the wall clock less the allowed lateness (no newer
message will come to push the horizon); a simulated clock never flushes on wall time, the
gateways' health messages keep its event time moving. At stop the buffer is flushed whole.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from aquavolt.clock import Clock, RealClock
from aquavolt.config import LoadedField
from aquavolt.errors import WireError
from aquavolt.influx import Influx, InfluxError
from aquavolt.logs import OnceLogger
from aquavolt.mqtt import connect_properties, make_client
from aquavolt.progress import ProgressReporter
from aquavolt.settings import MqttSettings
from aquavolt.wire import (
    AlarmEvent,
    Batch,
    CommandReply,
    DeadLetter,
    DeviceStatus,
    GatewayStatus,
    Health,
    Topics,
    decode,
    encode,
)
from rules.api import Condition, CustomerSink
from rules.core import Core, Output
from rules.daily import DailySchedule
from rules.detectors.overconsumption import OverConsumptionCheck, RollupNotReady
from rules.history import load_history
from rules.notify import Notifier
from rules.store import CommandLog, Store

log = logging.getLogger("aquavolt.rules")
DAILY_RETRY_S = 5.0
"""Wall seconds before a daily check that failed (InfluxDB unreachable or slow) is tried again."""
ROLLUP_POLL_S = 1.0
"""Wall seconds between looks for yesterday's daily rollup (a one-row query) while the check
waits for it: on a clock running 3000 times faster, 5 s would be four simulated hours."""
DAILY_RECHECK_S = 3600.0
"""Event seconds after a daily check at which the same day is judged once more."""
DAILY_TIMEOUT_S = 60.0
"""The daily check reads weeks of rollups for every customer: a loaded InfluxDB may take a
while, which is no reason to give up the day's check."""
ROUND_MAX_S = 0.05
"""Wall seconds of messages per processing round: the loop gets control back between rounds
(signals, the API), however fast readings arrive."""
STOP_BUDGET_S = 0.5
"""Wall seconds given at stop to the messages already received and to pending writes."""



@dataclass
class Stats:
    messages: int = 0
    readings: int = 0
    rejected: int = 0
    events: int = 0
    rounds: int = 0
    errors: int = 0
    last_error: str = ""
    daily_checks: int = 0
    daily_last_day: str = ""
    horizon_ms: int = 0
    """Event time released to the rules (newest timestamp seen less the allowed lateness)."""
    late_messages: int = 0
    """Messages older than what had been released: processed at once, out of order."""
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(self, loaded: LoadedField, mqtt_settings: MqttSettings, state_dir: Path, clock: Clock,
                 notifier: Notifier | None = None, customer_sink: CustomerSink | None = None,
                 tick_every_ms: int | None = None, influx: Influx | None = None) -> None:
        self.loaded = loaded
        self.settings = mqtt_settings
        self.topics = Topics(mqtt_settings.prefix)
        self.clock = clock
        self.store = Store(state_dir)
        self.commands = CommandLog(state_dir)
        # tick_every_ms (--tick-ms) overrides the field's rules.event_time.tick_s
        self.core = Core(loaded, tick_every_ms=tick_every_ms)
        self._lateness_ms = int(loaded.field.rules.event_time.allowed_lateness_s * 1000)
        alarms, seq, horizon = self.store.load()
        self.core.manager.load(alarms, seq)
        self.core.restore(horizon)
        self.notifier = notifier
        self.customer_sink = customer_sink
        self.stats = Stats()
        self.influx = influx
        self._once = OnceLogger(log)
        self._writes: set[asyncio.Task[None]] = set()
        # over-consumption: daily, on event time, when the rollups can be read
        self.daily: OverConsumptionCheck | None = None
        if influx is not None and any(c.water_meter for c in loaded.field.customers):
            slow = Influx(influx.s.model_copy(update={"timeout_s": max(influx.s.timeout_s, DAILY_TIMEOUT_S)}))
            self.daily = OverConsumptionCheck(loaded, slow)
        cfg = loaded.field.rules.over_consumption
        self.schedule = DailySchedule(loaded.field.timezone, cfg.check_delay_s)
        self._daily_task: asyncio.Task[None] | None = None
        self._daily_retry_at = 0.0
        self._recheck: tuple[date, int] | None = None
        self.connected = threading.Event()
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._wake_pending = False  # a wake-up is scheduled on the loop (set from paho's thread)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        cid = f"aquavolt-rules-{loaded.field.id}-{mqtt_settings.prefix.replace('/', '_')}"[:120]
        self.client = make_client(mqtt_settings, cid, max_queued=100_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.progress = ProgressReporter("rules", self.topics,
                                         lambda t, p: self.client.publish(t, p, qos=1), clock.now_ms)
        self._handlers: dict[str, Callable[[str, bytes], Output]] = {
            "data": self._data, "status": self._status, "health": self._health, "reply": self._reply}

    # ---------------------------------------------------------------- MQTT thread
    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object = None) -> None:
        if rc.is_failure:
            log.error("MQTT connection refused: %s", rc)
            return
        t = self.topics
        client.subscribe([(t.all_data, 1), (t.all_device_status, 1), (t.all_gateway_status, 1),
                          (t.all_health, 1), (f"{t.prefix}/gw/+/dev/+/reply", 1)])
        self.connected.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.progress.ready)
        log.info("connected to MQTT %s:%d", self.settings.host, self.settings.port)

    def _on_disconnect(self, *_: object) -> None:
        self.connected.clear()
        log.warning("MQTT disconnected; paho reconnects")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        # append, THEN look at the flag: a round resets the flag before it drains the inbox, so
        # a message is either drained by a round that started after it or wakes the next one.
        # (Testing "was the inbox empty" before appending lost a wake-up when the loop drained
        # the inbox in between: the engine then stopped processing for good.)
        self._inbox.append((msg.topic, bytes(msg.payload)))
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake.set)

    # ---------------------------------------------------------------- decoding
    def _data(self, topic: str, payload: bytes) -> Output:
        b = decode(payload, Batch)
        self.stats.readings += len(b.readings)
        return self.core.batch(b)

    def _status(self, topic: str, payload: bytes) -> Output:
        if topic.count("/dev/"):
            return self.core.device_status(decode(payload, DeviceStatus))
        return self.core.gateway_status(decode(payload, GatewayStatus))

    def _health(self, topic: str, payload: bytes) -> Output:
        return self.core.health(decode(payload, Health))

    def _reply(self, topic: str, payload: bytes) -> Output:
        """A gateway's answer to a command: stored in the command log (from its own topic only)."""
        reply = decode(payload, CommandReply)
        _kind, gw, dev = self.topics.parse(topic)
        if (reply.gateway, reply.device) != (gw, dev):
            raise WireError(f"reply names {reply.gateway}/{reply.device} on the topic of {gw}/{dev}")
        self.commands.reply(topic, reply, self.clock.now_ms())
        return Output()

    def _handle(self, topic: str, payload: bytes, out: Output) -> None:
        try:
            kind, _gw, _dev = self.topics.parse(topic)
            handler = self._handlers.get(kind)
            if handler is not None:
                out.extend(handler(topic, payload))
        except WireError as exc:
            self.stats.rejected += 1
            dl = DeadLetter(component="rules", topic=topic, reason=str(exc),
                            payload=payload.decode("utf-8", "replace"), ts_ms=self.clock.now_ms())
            self.client.publish(self.topics.deadletter("rules"), encode(dl), qos=1)

    # ---------------------------------------------------------------- the loop
    def emit(self, events: list[AlarmEvent], customer: list[Condition] | None = None) -> None:
        """Store, then publish, then notify: every transition, from rules or operators."""
        if events:
            m = self.core.manager
            self.store.save(events, m.alarms, m.seq, self.core.horizon_ms)
            for e in events:
                payload = encode(e)
                self.client.publish(self.topics.alarm(e.asset, e.condition), payload, qos=1, retain=True)
                self.client.publish(self.topics.alarm_events, payload, qos=1)
            self.stats.events += len(events)
            if self.notifier is not None:
                self.notifier.on_events(events, self.clock.now())
        if customer and self.customer_sink is not None:
            for c in customer:
                self.customer_sink.handle(c)

    def process_pending(self, budget_s: float = ROUND_MAX_S) -> None:
        """One processing round: the messages received so far, for at most ``budget_s`` (the
        loop must get control back while readings keep arriving), then store, publish, notify."""
        self._wake_pending = False  # from now on, a new message schedules another round
        out = Output()
        inbox = self._inbox
        end = time.monotonic() + budget_s
        for _ in range(len(inbox)):
            topic, payload = inbox.popleft()
            self.stats.messages += 1
            self._handle(topic, payload, out)
            if time.monotonic() > end:
                break
        if inbox:
            self._wake.set()  # more: another round after the loop has had its turn
        self.stats.rounds += 1
        self._output(out)

    def _output(self, out: Output) -> None:
        """After the core ran: metrics lines, store, publish, notify, the daily check."""
        self.core.drain(out)
        self.stats.horizon_ms = self.core.horizon_ms
        self.stats.late_messages = self.core.late_messages
        self.emit(out.events, out.customer)
        self._maybe_daily()
        # after the events of this round: whoever sees this progress has seen them
        backlog = len(self._inbox)
        self.progress.update(self.core.horizon_ms or None, backlog, force=not backlog)
        if out.lines and self.influx is not None and self._loop is not None:
            task = self._loop.create_task(self._write(out.lines))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    def flush_idle(self) -> None:
        """On a real-time clock only: with nothing received, release what the wall clock says
        no newer message can still be ahead of (now less the allowed lateness), at most up to
        the newest timestamp seen. A simulated clock never flushes on wall time."""
        if not isinstance(self.clock, RealClock) or self._inbox:
            return
        until = min(self.core.max_seen_ms, self.clock.now_ms() - self._lateness_ms)
        if until > self.core.horizon_ms:
            self._output(self.core.flush(until))

    async def _write(self, lines: list[str]) -> None:
        """Detector metrics (night flow, water balance) to InfluxDB; alarms go via the collector."""
        assert self.influx is not None
        try:
            await asyncio.to_thread(self.influx.write, lines)
            self._once.recovered("influx")
        except InfluxError as exc:
            self.stats.errors += 1
            self._once.failure("influx", str(exc))

    def _maybe_daily(self) -> None:
        """Start the day's over-consumption check when the horizon says it is due."""
        if self.daily is None or self._loop is None or self._daily_task is not None:
            return
        if self._loop.time() < self._daily_retry_at:
            return
        horizon = self.core.horizon_ms
        due = self.schedule.due(horizon)
        if due is None and self._recheck is not None and horizon >= self._recheck[1]:
            due, self._recheck = self._recheck, None
        if due is None:
            return
        self._daily_task = self._loop.create_task(self._run_daily(*due), name="over-consumption")

    async def _run_daily(self, day: date, ts_ms: int) -> None:
        """The check reads InfluxDB: it runs in the default executor, its verdicts on the loop."""
        assert self.daily is not None and self._loop is not None
        try:
            conds = await asyncio.to_thread(self.daily.check, day, ts_ms)
        except RollupNotReady as exc:
            log.debug("over-consumption: %s; tried again in %g s", exc, ROLLUP_POLL_S)
            self._daily_retry_at = self._loop.time() + ROLLUP_POLL_S
            return
        except InfluxError as exc:
            if exc.missing_database:  # no collector has written yet: nothing to judge so far
                log.info("over-consumption: database %s not created yet; check of %s tried again "
                         "in %g s", self.influx.s.database if self.influx else "?", day, DAILY_RETRY_S)
                self._daily_retry_at = self._loop.time() + DAILY_RETRY_S
                return
            self.stats.errors += 1
            self._once.failure("over-consumption", f"daily check of {day} failed: {exc}")
            self._daily_retry_at = self._loop.time() + DAILY_RETRY_S
            return
        finally:
            self._daily_task = None
        self._once.recovered("over-consumption")
        if self.schedule.last != day and self.core.horizon_ms < ts_ms + int(DAILY_RECHECK_S * 1000):
            # judged once more an hour later: a meter's last readings of the day may reach
            # InfluxDB (and its daily rollup) after the first check; repeats change nothing
            self._recheck = (day, ts_ms + int(DAILY_RECHECK_S * 1000))
        self.schedule.last = day
        self.stats.daily_checks += 1
        self.stats.daily_last_day = day.isoformat()
        log.info("over-consumption check of %s: %d change(s)", day, len(conds))
        if conds:
            out = self.core.conditions(conds)
            self.emit(out.events, out.customer)

    @property
    def backlog(self) -> int:
        """Messages received and not processed yet (the engine is behind when this grows)."""
        return len(self._inbox)

    async def _process(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the signal handlers and the API run between rounds
            try:
                self.process_pending()
            except Exception as exc:  # supervisor boundary: count, log, go on with the next round
                self.stats.errors += 1
                self.stats.last_error = repr(exc)
                log.exception("processing round failed")
                if self._inbox:
                    self._wake.set()  # the rest of the inbox is not left waiting for a new message

    async def _housekeeping(self, period_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.emit(self.core.manager.expire(self.clock.now_ms()))
            self.flush_idle()
            self._maybe_daily()
            if self.notifier is not None:
                self.notifier.escalate(self.clock.now())

    async def prime_from_history(self) -> None:
        """Burst profiles and night-flow baselines from InfluxDB history, before any reading."""
        if self.influx is None or self.loaded.field.rules.prime_history_days <= 0:
            return
        try:
            samples = await asyncio.to_thread(load_history, self.influx, self.loaded, self.clock.now_ms())
        except InfluxError as exc:
            if exc.missing_database:
                log.info("no history to prime from: database %s not created yet; learning from live "
                         "readings", self.influx.s.database)
                return
            self.stats.errors += 1
            self._once.failure("history", f"priming from history failed, learning from live readings: {exc}")
            return
        fed = self.core.prime(samples)
        self.stats.extra["primed_samples"] = len(samples)
        log.info("primed burst and night-flow detectors: %d history samples (%d steps)", len(samples), fed)

    async def run(self, stop: asyncio.Event, serve_api: Callable[[], Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await self.prime_from_history()
        s = self.settings
        self.client.connect_async(s.host, s.port, s.keepalive_s, clean_start=False,
                                  properties=connect_properties(3600))
        self.client.loop_start()
        tasks = [asyncio.create_task(self._process()), asyncio.create_task(self._housekeeping())]
        runner = await serve_api() if serve_api is not None else None
        try:
            await stop.wait()
        finally:
            await self._shutdown(tasks, runner)

    async def _shutdown(self, tasks: list[asyncio.Task[None]], runner: Any) -> None:
        """Stop within about two seconds: intake first (no more messages), the messages
        already received for at most ``STOP_BUDGET_S``, pending writes and the daily check
        given the same budget (then cancelled), the API, the SQLite store last."""
        t0 = asyncio.get_running_loop().time()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.client.on_message = None
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        deadline = t0 + STOP_BUDGET_S
        loop = asyncio.get_running_loop()
        while self._inbox and loop.time() < deadline:
            self.process_pending()
        if self._inbox:
            log.warning("stopping: %d received message(s) left unprocessed", len(self._inbox))
            self._inbox.clear()
        # the end of the stream: what waits in the reorder buffer is judged, not lost
        self._output(self.core.flush(self.core.max_seen_ms))
        pending: list[asyncio.Task[Any]] = [*self._writes]
        if self._daily_task is not None:
            pending.append(self._daily_task)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=max(0.1, deadline - loop.time()))
            for t in late:
                t.cancel()
        stop_sink = getattr(self.customer_sink, "stop", None)
        if stop_sink is not None:
            try:
                await asyncio.wait_for(stop_sink(), timeout=1.0)
            except TimeoutError:
                log.warning("stopping: the customer SMS sink did not stop within 1 s")
        if runner is not None:
            await runner.cleanup()
        if self.notifier is not None:
            await self.notifier.close()
        self.store.close()
        self.commands.close()
        log.info("stopped in %.2f s", loop.time() - t0)
