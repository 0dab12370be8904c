"""The running engine: MQTT in, the pure core, SQLite, MQTT out, the operator API.

One asyncio loop owns all state (core, manager, store); the paho network thread only
appends raw messages to a deque and wakes the loop. Each processing round drains the
deque, runs the core, stores the transitions in one SQLite transaction, then publishes
them: retained on ``{prefix}/alarm/{asset}/{condition}`` and on ``{prefix}/event/alarm``.

A round is all or nothing (``Engine._round``): the core's state is checkpointed before it;
its transitions, the alarms and the messages to publish (the outbox) are committed in one
transaction; only then are the messages published, from the outbox, each deleted from it
when the broker acknowledges it. A round that raises is rolled back to the checkpoint (the
state of the last commit), counted (``failed_rounds`` on ``/health``, which says
``degraded``) and its messages are dead-lettered with the error. At start, what the outbox
still holds (stored, not acknowledged) is published again: same events, same ``details.seq``.

Event time moves with the messages only (``rules.eventtime``): the engine never scales
anything by the clock's acceleration. On a real-time clock (``RealClock``) alone, an idle
engine flushes the reorder buffer up to the wall clock less the allowed lateness (no newer
message will come to push the horizon); a simulated clock never flushes on wall time, the
gateways' health messages keep its event time moving. At stop the buffer is flushed whole.
"""

from __future__ import annotations

import asyncio
import base64
import faulthandler
import heapq
import logging
import os
import pickle
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from aquavolt.clock import Clock, RealClock
from aquavolt.config import LoadedField
from aquavolt.errors import WireError
from aquavolt.influx import Influx, InfluxError
from aquavolt.logs import OnceLogger
from aquavolt.mqtt import MAX_OUTSTANDING, Transport
from aquavolt.progress import ProgressReporter
from aquavolt.rules.api import Condition, CustomerSink
from aquavolt.rules.core import Core, Output
from aquavolt.rules.daily import DailySchedule
from aquavolt.rules.dedup import SeenSeqs
from aquavolt.rules.detectors.overconsumption import OverConsumptionCheck, RollupNotReady
from aquavolt.rules.history import load_history
from aquavolt.rules.notify import Notifier
from aquavolt.rules.store import Action, CommandLog, Message, Store
from aquavolt.sdnotify import Notifier as SystemdNotifier
from aquavolt.settings import MqttSettings
from aquavolt.sparkplug_host import SparkplugHost
from aquavolt.wire import (
    MAX_DEADLETTER_PAYLOAD,
    MAX_TEXT,
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
INBOX_MAX = 20_000
"""Messages received and not processed at most: beyond, paho's thread stops reading and the
broker queues them for the session (backpressure)."""
STOP_BUDGET_S = 0.5
"""Wall seconds given at stop to the messages already received and to pending writes."""
EARLY_GRACE_S = 2.0
"""On a simulated clock, wall seconds a message stamped beyond the plausibility window waits
for the clock before it is rejected: in lockstep the engine follows the grants on its own MQTT
connection, and an edge's readings of a new instant may overtake the grant of that instant."""
EARLY_MAX = 10_000
"""Messages waiting for a simulated clock at most; more are rejected at once."""
STUCK_AFTER_S = 10.0
"""Wall seconds without a processing round while messages wait: ``/health`` answers 503, and
the systemd watchdog is no longer pinged (supervision of the process, not a rule)."""


STOP_HARD_S = 5.0
"""Wall seconds after SIGTERM/SIGINT after which a loop that has not ended is ended by the
watchdog thread (exit status ``HARD_STOP_STATUS``), every thread's stack written to stderr."""
HARD_STOP_STATUS = 70

TEST_HOLD_PUBLISH_ENV = "AQUAVOLT_RULES_TEST_HOLD_PUBLISH"
"""Test hook, never set in production: while the file it names exists, nothing is published
from the outbox (tests of a crash between storing and publishing)."""


def _copied(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes with their containers copied one level (their items are not changed in place)."""
    return {k: v.copy() if isinstance(v, (dict, list, set, deque)) else v for k, v in attrs.items()}


class Changes:
    """What the operator console's event streams wait on: woken when the alarms or the command
    log change (a commit, a command issued, a gateway's reply) or a stream must re-check its
    session (sign-out, stop). No polling; only the engine's event loop calls ``notify``."""

    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        self.version += 1
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        self._waiters.clear()

    async def wait(self, seen: int, timeout_s: float) -> int:
        """The version after a change newer than ``seen``, or the same after ``timeout_s``."""
        if self.version != seen or timeout_s <= 0:
            return self.version
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)
        return self.version


class NotStored(Exception):
    """An operator's change that could not be committed: rolled back, answered 503."""


class Checkpoint:
    """The core's state before a processing round, to roll a failed round back to.

    The rules' states are copied whole (pickled: detector states are changed in place), the
    alarm manager by its ``snapshot``, the reorder buffer and the core's own tables one level
    deep, since the buffered messages and the table values are never changed in place. A round
    is rolled back rather than applied to a copy of the core and swapped: the checkpoint costs
    about 1 ms per round with 1,000 alarms on the demo field, where a copy of the core would
    copy every rule, its configuration and the buffer."""

    def __init__(self, core: Core) -> None:
        self.states = pickle.dumps(core.states, protocol=pickle.HIGHEST_PROTOCOL)
        self.manager = core.manager.snapshot()
        self.order = _copied(vars(core.order))
        self.core = _copied({k: v for k, v in vars(core).items()
                             if k not in ("states", "manager", "order", "rules", "loaded")})

    def restore(self, core: Core) -> list[Any]:
        """Back to the checkpoint. Returns the buffered messages the failed round had released
        to the rules: they are dead-lettered with the round, not given to the rules again."""
        left = {e[:3] for e in core.order._heap}
        heap = self.order["_heap"]
        released = [e for e in heap if e[:3] not in left]
        if released:
            gone = {e[:3] for e in released}
            heap = [e for e in heap if e[:3] not in gone]
            heapq.heapify(heap)
            self.order["_heap"] = heap
        vars(core.order).update(self.order)
        vars(core).update(self.core)
        core.states = pickle.loads(self.states)
        core.manager.restore(self.manager)
        return [e[4] for e in released]


class Watchdog:
    """Supervision of the event loop itself, from a thread (wall time, never a rule): the loop
    beats at each housekeeping; when it has not for ``stuck_after_s``, every thread's stack is
    logged once (where it is stuck); once a stop is requested, a loop still running
    ``stop_hard_s`` later is ended, so SIGTERM is obeyed even by a round that never returns."""

    def __init__(self, stuck_after_s: float = STUCK_AFTER_S, stop_hard_s: float = STOP_HARD_S) -> None:
        self.stuck_after_s = stuck_after_s
        self.stop_hard_s = stop_hard_s
        self.beat_at = time.monotonic()
        self.stop_requested_at: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.beat_at = time.monotonic()

    def request_stop(self) -> None:
        """From a signal handler (runs in the main thread even while a round is running)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="rules-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        dumped = False
        while not self._done.wait(0.25):
            now = time.monotonic()
            silent = now - self.beat_at
            if silent > self.stuck_after_s and not dumped:
                log.error("event loop blocked for %.1f s; stacks follow on stderr", silent)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                dumped = True
            elif silent <= self.stuck_after_s:
                dumped = False
            asked = self.stop_requested_at
            if asked is not None and now - asked > self.stop_hard_s:
                log.error("stop requested %.1f s ago and the loop has not ended: exiting", now - asked)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                logging.shutdown()
                os._exit(HARD_STOP_STATUS)


class Rejected(WireError):
    """A well-formed message the engine refuses: ``counter`` names the Stats field counting it."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.counter = counter



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
    resent_skipped: int = 0
    """Batches sent again (historical, same gateway, boot and seq) and not applied twice."""
    rejected_future: int = 0
    """Messages stamped beyond ``rules.event_time.max_future_s`` ahead of now (in ``rejected``)."""
    rejected_source: int = 0
    """Messages whose topic, payload and field file disagree on gateway or device (in ``rejected``)."""
    waiting_for_clock: int = 0
    """Messages stamped ahead of a simulated clock, waiting for it (``EARLY_GRACE_S`` at most)."""
    failed_rounds: int = 0
    failed_actions: int = 0
    """Operator actions whose commit failed: rolled back, the error answered to the operator."""
    """Processing rounds that raised: rolled back, their messages dead-lettered."""
    last_round_error: str = ""
    round_dead_letters: int = 0
    """Messages dead-lettered because their processing round failed."""
    sparkplug_seq_gaps: int = 0
    """Sequence gaps of the field's Sparkplug B edge nodes (each asks for a rebirth)."""
    sparkplug_rebirth_requests: int = 0
    """``Node Control/Rebirth`` NCMDs sent (gap, unknown alias, data before a birth)."""
    outbox_pending: int = 0
    """Messages stored and not yet acknowledged by the broker."""
    health: str = "ok"
    """``degraded`` once a processing round has failed (since the engine started)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _binary_text(payload: bytes) -> str:
    """A protobuf payload as dead-letter text: base64, cut to the limit."""
    return ("base64:" + base64.b64encode(payload).decode())[:MAX_DEADLETTER_PAYLOAD]


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
        # ingestion checks: the plausibility window of event time, the source of each message
        self._max_future_ms = int(loaded.field.rules.event_time.max_future_s * 1000)
        self._device_gw = {d: g.id for d, (g, _d) in loaded.field.devices.items()}
        self._gateways = {g.id for g in loaded.field.gateways}
        # third-party Sparkplug B edge nodes (sparkplug gateways): births, data and deaths read
        # as their aquavolt equivalents (aquavolt.sparkplug_host), then handled as those are
        self.sparkplug = SparkplugHost(loaded.field, self.topics, profiles=loaded.profiles)
        self._early: deque[tuple[float, str, bytes]] = deque()  # (waiting since, topic, payload)
        self.early_grace_s = EARLY_GRACE_S
        # supervision (wall time): progress of the processing loop, the systemd watchdog
        self.stuck_after_s = STUCK_AFTER_S
        self._progress_at = time.monotonic()
        self.systemd = SystemdNotifier()
        self.watchdog = Watchdog()
        self._systemd_ready = False
        alarms, seq, horizon = self.store.load()
        self.core.manager.load(alarms, seq)
        self.core.restore(horizon)
        self.notifier = notifier
        self.customer_sink = customer_sink
        self.stats = Stats()
        self._seen = SeenSeqs()
        self.changes = Changes()  # the console's event streams wait on it
        self._seen_this_round: list[tuple[str, int, int]] = []  # forgotten if the round is rolled back
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
        self._first_horizon: int | None = None  # the horizon when this run began
        self._rollup_missing: date | None = None  # the day whose check waits for its rollup
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pubacks: deque[int] = deque()  # message ids the broker acknowledged (QoS 1 PUBACK)
        cid = f"aquavolt-rules-{loaded.field.id}-{mqtt_settings.prefix.replace('/', '_')}"[:120]
        t = self.topics
        # a persistent session: what arrives while the engine restarts waits at the broker
        self.transport = Transport(
            mqtt_settings, cid, clean_start=False, session_expiry_s=3600, max_queued=MAX_OUTSTANDING,
            max_inbox=INBOX_MAX, name="rules.mqtt",
            subscriptions=[(t.all_data, 1), (t.all_device_status, 1), (t.all_gateway_status, 1),
                           (t.all_health, 1), (f"{t.prefix}/gw/+/dev/+/reply", 1),
                           *((f, 1) for f in self.sparkplug.filters())])
        self.transport.on_wake = self._wake.set
        self.transport.on_connected.append(lambda _session: self.progress.ready())
        self.transport.on_pubacks = self._pubacks.extend
        self.connected = self.transport.connected
        self._inbox = self.transport.inbox
        # the outbox: stored, not yet acknowledged by the broker (id -> message, in id order)
        self._outbox: dict[int, Message] = dict(self.store.outbox())
        self._inflight: dict[int, int] = {}  # MQTT message id -> outbox id, published, not acknowledged
        self._acked: list[int] = []  # acknowledged, still to delete from the outbox
        self._hold_publish = os.environ.get(TEST_HOLD_PUBLISH_ENV) or None
        self.progress = ProgressReporter("rules", self.topics,
                                         lambda t, p: self.transport.publish(t, p, qos=1), clock.now_ms)

    # ---------------------------------------------------------------- decoding, checks
    def _message(self, kind: str, gw: str, dev: str | None,
                 payload: bytes) -> tuple[Callable[[Any], Output], Any, int | None] | None:
        """Decode and authenticate by topic: (apply, message, event ts), None if not consumed."""
        if kind == "data":
            b = decode(payload, Batch)
            self._check_source("Batch", gw, dev, b.gateway, b.device)
            return self._batch, b, max((r.ts_ms for r in b.readings), default=None)
        if kind == "status" and dev is not None:
            ds = decode(payload, DeviceStatus)
            self._check_source("DeviceStatus", gw, dev, ds.gateway, ds.device)
            return self.core.device_status, ds, ds.ts_ms
        if kind == "status":
            gs = decode(payload, GatewayStatus)
            self._check_source("GatewayStatus", gw, None, gs.gateway, None)
            return self.core.gateway_status, gs, gs.ts_ms
        if kind == "health":
            h = decode(payload, Health)
            self._check_source("Health", gw, None, h.gateway, None)
            return self.core.health, h, h.ts_ms
        if kind == "reply" and dev is not None:
            reply = decode(payload, CommandReply)
            self._check_source("CommandReply", gw, dev, reply.gateway, reply.device)
            topic = self.topics.reply(gw, dev)
            return (lambda r: self._reply(topic, r)), reply, None
        return None

    def _reply(self, topic: str, reply: CommandReply) -> Output:
        """A gateway's answer to a command: stored in the command log (from its own topic only,
        which the caller has checked)."""
        self.commands.reply(topic, reply, self.clock.now_ms())
        self.changes.notify()
        return Output()

    def _batch(self, b: Batch) -> Output:
        if not self._seen.first_time(b.gateway, b.bd_seq, b.seq):
            if b.historical:
                self.stats.resent_skipped += 1  # sent again after the collector's stored mark
                return Output()
        else:
            self._seen_this_round.append((b.gateway, b.bd_seq, b.seq))
        self.stats.readings += len(b.readings)
        return self.core.batch(b)

    def _check_source(self, what: str, gw: str, dev: str | None, said_gw: str, said_dev: str | None) -> None:
        """A message about a device is accepted only on the topic of the gateway the field file
        puts it on, naming that gateway and device; a gateway's own messages only on its topic."""
        if said_gw != gw:
            raise Rejected(f"{what} on the topic of gateway {gw!r} names gateway {said_gw!r}: "
                           "rejected (source not authenticated by topic)", "rejected_source")
        if dev is None:
            if gw not in self._gateways:
                raise Rejected(f"{what} from gateway {gw!r}, which the field file does not have: "
                               "rejected", "rejected_source")
            return
        if said_dev != dev:
            raise Rejected(f"{what} on the topic of device {dev!r} of gateway {gw!r} names device "
                           f"{said_dev!r}: rejected (source not authenticated by topic)", "rejected_source")
        owner = self._device_gw.get(dev)
        if owner != gw:
            where = f"puts it on gateway {owner!r}" if owner else "does not have it"
            raise Rejected(f"{what} about device {dev!r} on the topic of gateway {gw!r}, but the field "
                           f"file {where}: rejected", "rejected_source")

    def _too_far_ahead(self, what: str, gw: str, dev: str | None, ts: int, now: int) -> Rejected:
        about = f"gateway {gw!r}" + (f" device {dev!r}" if dev else "")
        window_s = self._max_future_ms / 1000
        return Rejected(f"{what} from {about} stamped {ts} ms, {(ts - now) / 1000:.0f} s ahead of the "
                        f"engine's now ({now} ms), beyond rules.event_time.max_future_s = {window_s:g} s: "
                        "rejected, event time not moved", "rejected_future")

    def _handle(self, topic: str, payload: bytes, out: Output, now: int,
                waiting_since: float | None = None) -> None:
        """One message: decoded, authenticated by topic, checked against the plausibility
        window of event time around ``now`` (the round's instant), then given to the core;
        refused ones are dead-lettered."""
        if topic.startswith("spBv1.0/"):
            self._sparkplug(topic, payload, out, now, waiting_since)
            return
        try:
            kind, gw, dev = self.topics.parse(topic)
            m = self._message(kind, gw, dev, payload)
            if m is None:
                return
            apply, msg, ts = m
            if ts is not None and ts > now + self._max_future_ms:
                if self._may_wait(waiting_since):
                    self._early.append((waiting_since or time.monotonic(), topic, payload))
                    return
                raise self._too_far_ahead(type(msg).__name__, gw, dev, ts, now)
            out.extend(apply(msg))
        except WireError as exc:
            self.stats.rejected += 1
            if isinstance(exc, Rejected):
                n = getattr(self.stats, exc.counter) + 1
                setattr(self.stats, exc.counter, n)
                if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th...: seen in the log, never a flood
                    log.warning("%s #%d on %s: %s", exc.counter, n, topic, exc)
            dl = DeadLetter(component="rules", topic=topic, reason=str(exc),
                            payload=payload.decode("utf-8", "replace"), ts_ms=self.clock.now_ms())
            self.transport.publish(self.topics.deadletter("rules"), encode(dl), qos=1)

    def _sparkplug(self, topic: str, payload: bytes, out: Output, now: int,
                   waiting_since: float | None) -> None:
        """A Sparkplug B edge node's message: each aquavolt message it stands for is handled as
        if it had come on its own topic (same checks, same rules); what cannot be read is
        dead-lettered with the reason; a gap or a missing birth asks the node for a rebirth."""
        got = self.sparkplug.handle(topic, payload, self.clock.now_ms())
        self.stats.sparkplug_seq_gaps += got.gaps
        for cmd_topic, cmd in got.commands:
            self.stats.sparkplug_rebirth_requests += 1
            self.transport.publish(cmd_topic, cmd, qos=0)
        for wire_topic, msg in got.messages:
            self._handle(wire_topic, encode(msg), out, now, waiting_since)
        for reason in got.dead:
            self.stats.rejected += 1
            dl = DeadLetter(component="rules", topic=topic, reason=f"sparkplug: {reason}"[:MAX_TEXT],
                            payload=_binary_text(payload), ts_ms=self.clock.now_ms())
            self.transport.publish(self.topics.deadletter("rules"), encode(dl), qos=1)

    def _may_wait(self, since: float | None) -> bool:
        """On a simulated clock (lockstep: the grant may come after the readings it allowed), a
        message ahead of the window waits ``EARLY_GRACE_S`` for the clock; never on the wall clock."""
        if isinstance(self.clock, RealClock) or len(self._early) >= EARLY_MAX:
            return False
        return since is None or time.monotonic() - since < self.early_grace_s

    def stuck(self) -> str:
        """Why the processing loop is judged stuck, '' when it is not: messages have waited
        ``stuck_after_s`` wall seconds without a processing round (``/health`` answers 503)."""
        waiting = len(self._inbox)
        idle = time.monotonic() - max(self._progress_at, self.transport.inbox_since)
        if waiting and idle > self.stuck_after_s:
            return f"processing loop stuck: no round for {idle:.1f} s with {waiting} message(s) waiting"
        return ""

    # ---------------------------------------------------------------- the loop
    def operator_action(self, operator: str, action: str, target: str, request: dict[str, Any],
                        change: Callable[[], tuple[list[AlarmEvent], dict[str, Any]]]
                        ) -> tuple[list[AlarmEvent], dict[str, Any]]:
        """An operator's change of the alarm manager (acknowledge, shelve, ...), all or nothing:
        ``change`` makes it and returns its events and result; the events, the alarms, the
        outbox and the action's audit row are committed in one transaction, then published. If
        the change or the commit raises, the manager goes back to its snapshot, the error is
        counted and raised to the caller (the API answers with it): the operator never sees a
        change that is not stored, nor a stored one that is not audited."""
        snap = self.core.manager.snapshot()
        try:
            events, result = change()
        except Exception:  # refused (no such alarm, stale seen_seq, ...): nothing to undo but safe
            self.core.manager.restore(snap)
            raise
        try:
            self._commit(events, Action(self.clock.now_ms(), operator, action, target, request, result))
        except Exception as exc:
            self.core.manager.restore(snap)
            st = self.stats
            st.failed_actions += 1
            st.errors += 1
            st.last_error = repr(exc)
            st.health = "degraded"
            log.error("operator action %s on %s not stored, rolled back", action, target, exc_info=exc)
            raise NotStored(f"{action} on {target} was not stored ({exc}); nothing changed") from exc
        self._published(events, None)
        return events, result

    def _commit(self, events: list[AlarmEvent], action: Action | None = None) -> None:
        """One transaction: the events, the alarms, the sequence, the horizon, the messages
        that publish the events (outbox) and the operator's action that made them. Nothing is
        published before it is committed."""
        if not events and action is None:
            return
        m = self.core.manager
        msgs: list[Message] = []
        for e in events:
            payload = encode(e)
            msgs += [(self.topics.alarm(e.asset, e.condition), payload, True),
                     (self.topics.alarm_events, payload, False)]
        ids = self.store.save(events, m.alarms, m.seq, self.core.horizon_ms, msgs, action)
        self._outbox.update(zip(ids, msgs, strict=True))
        self.stats.events += len(events)
        self.changes.notify()

    def _published(self, events: list[AlarmEvent], customer: list[Condition] | None) -> None:
        """After a commit: publish from the outbox, notify, the customer sink."""
        self.publish_outbox()
        if events and self.notifier is not None:
            self.notifier.on_events(events, self.clock.now())
        if customer and self.customer_sink is not None:
            for c in customer:
                self.customer_sink.handle(c)

    def publish_outbox(self) -> None:
        """What the broker acknowledged (``on_publish``, by message id) leaves the outbox; what is
        not in flight is published (QoS 1, in outbox order; while disconnected paho queues it and
        sends it on connect)."""
        while self._pubacks:
            i = self._inflight.pop(self._pubacks.popleft(), None)  # None: not an outbox message
            if i is not None and self._outbox.pop(i, None) is not None:
                self._acked.append(i)
        if self._acked:
            try:
                self.store.sent(self._acked)
                self._acked = []
            except sqlite3.Error as exc:  # deleted at the next look; a restart would publish them again
                self._once.failure("outbox", f"acknowledged messages not yet deleted from the outbox: {exc}")
        if not (self._hold_publish and os.path.exists(self._hold_publish)):
            flying = set(self._inflight.values())
            for i, (topic, payload, retain) in self._outbox.items():
                if i in flying:
                    continue
                mid = self.transport.publish(topic, payload, qos=1, retain=retain)
                if mid is None:
                    break  # paho's queue is full: the rest at the next housekeeping
                self._inflight[mid] = i  # an id handed out again replaces the older: it goes again
        self.stats.outbox_pending = len(self._outbox)

    def _round(self, work: Callable[[Output], None], received: list[tuple[str, bytes]]) -> bool:
        """A processing round, all or nothing: ``work`` runs the core into an Output, then the
        round is committed (store and outbox, one transaction) and only then published. If
        anything before the commit raises, the core and the alarm manager go back to the
        checkpoint taken before the round (the state of the last commit), the batches it marked
        as seen are forgotten (sent again, they are applied), the failure is counted, and the
        round's messages (``received``, and the buffered ones it had released)
        are dead-lettered with the error."""
        cp = Checkpoint(self.core)
        out = Output()
        self._seen_this_round.clear()
        try:
            work(out)
            self.core.drain(out)
            self._commit(out.events)
        except Exception as exc:
            released = cp.restore(self.core)
            for gw, bd_seq, seq in self._seen_this_round:  # not applied: a resend is new
                self._seen.forget(gw, bd_seq, seq)
            self._round_failed(exc, received, released)
            return False
        self._output(out)
        return True

    def _manager_change(self, change: Callable[[], Output]) -> None:
        """A change of the alarm manager alone (shelve expiry, the daily check's verdicts), all
        or nothing like a round: the manager goes back to its snapshot if the commit fails."""
        snap = self.core.manager.snapshot()
        try:
            out = change()
            self._commit(out.events)
        except Exception as exc:
            self.core.manager.restore(snap)
            self._round_failed(exc, [], [])
            return
        self._published(out.events, out.customer)

    def _round_failed(self, exc: Exception, received: list[tuple[str, bytes]], released: list[Any]) -> None:
        st = self.stats
        st.failed_rounds += 1
        st.errors += 1
        st.last_error = st.last_round_error = repr(exc)
        st.health = "degraded"
        log.error("processing round failed and was rolled back; %d message(s) dead-lettered",
                  len(received) + len(released), exc_info=exc)
        reason = f"processing round failed, rolled back, message not applied: {exc!r}"[:1000]
        now = self.clock.now_ms()
        dead = list(received) + [(self._topic_of(m), encode(m)) for m in released]
        for topic, payload in dead:
            dl = DeadLetter(component="rules", topic=topic, reason=reason,
                            payload=payload.decode("utf-8", "replace"), ts_ms=now)
            self.transport.publish(self.topics.deadletter("rules"), encode(dl), qos=1)
        st.round_dead_letters += len(dead)

    def _topic_of(self, msg: Any) -> str:
        t = self.topics
        if isinstance(msg, Batch):
            return t.data(msg.gateway, msg.device)
        if isinstance(msg, DeviceStatus):
            return t.device_status(msg.gateway, msg.device)
        if isinstance(msg, GatewayStatus):
            return t.gateway_status(msg.gateway)
        if isinstance(msg, Health):
            return t.health(msg.gateway)
        return ""

    def process_pending(self, budget_s: float = ROUND_MAX_S) -> None:
        """One processing round: the messages received so far, for at most ``budget_s`` (the
        loop must get control back while readings keep arriving), then store, publish, notify."""
        received: list[tuple[str, bytes]] = []
        inbox = self._inbox

        def work(out: Output) -> None:
            # one instant for the whole round: a follower's grant moves the clock from paho's
            # thread, and a message judged after it could overtake one still waiting for it
            now = self.clock.now_ms()
            if self._early:  # stamped ahead of a simulated clock: has the clock caught up?
                early, self._early = self._early, deque()
                received.extend((topic, payload) for _since, topic, payload in early)
                for since, topic, payload in early:
                    self._handle(topic, payload, out, now, since)
            end = time.monotonic() + budget_s
            for _ in range(len(inbox)):
                m = inbox.popleft()
                topic, payload = m.topic, m.payload
                received.append((topic, payload))
                self.stats.messages += 1
                self._handle(topic, payload, out, now)
                if time.monotonic() > end:
                    break

        if not self._round(work, received):
            self._early.clear()  # all of them are among the round's messages, dead-lettered
        self.transport.taken()
        if inbox:
            self._wake.set()  # more: another round after the loop has had its turn
        self.stats.rounds += 1
        self._progress_at = time.monotonic()

    def _output(self, out: Output) -> None:
        """After a round was committed: publish, notify, the daily check, metrics lines."""
        self.stats.horizon_ms = self.core.horizon_ms
        self.stats.late_messages = self.core.late_messages
        self.stats.waiting_for_clock = len(self._early)
        self._published(out.events, out.customer)
        self._maybe_daily()
        # after the events of this round: whoever sees this progress has seen them
        backlog = len(self._inbox)
        self.progress.update(self._handled_ms(), backlog, force=not backlog)
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
            self._round(lambda out: out.extend(self.core.flush(until)), [])

    async def _write(self, lines: list[str]) -> None:
        """Detector metrics (night flow, water balance) to InfluxDB; alarms go via the collector."""
        assert self.influx is not None
        try:
            await asyncio.to_thread(self.influx.write, lines)
            self._once.recovered("influx")
        except InfluxError as exc:
            self.stats.errors += 1
            self._once.failure("influx", str(exc))

    def _handled_ms(self) -> int | None:
        """Event time handled so far, as said on ``progress/rules``: the horizon, but not past
        a daily check that fell due during this run and is at work (reading InfluxDB, or
        retrying after an error) without a verdict yet: a replay ends once the engine has
        handled its last instant, and a check still reading InfluxDB on a busy machine was cut
        off, its alarm never raised. A check waiting for yesterday's rollup (none may ever
        come, as in a replay without history) holds nothing back."""
        h: int | None = int(self.core.horizon_ms) or None
        if h is None or self.daily is None:
            return h
        if self._first_horizon is None:
            self._first_horizon = h
        due = self._pending_check(h)
        if due is None or due[1] <= self._first_horizon:
            return h  # none pending, or one of days before this run (caught up, not waited for)
        if due[0] == self._rollup_missing:
            return h  # the check waits for a rollup, not for its own work: nothing to hold
        return min(h, int(due[1]) - 1)

    def _pending_check(self, horizon_ms: int) -> tuple[date, int] | None:
        """(day, event time) of the daily check due at this horizon and not done yet: the
        day's, else the hour-later look again at a day already judged."""
        due: tuple[date, int] | None = self.schedule.due(horizon_ms)
        if due is None and self._recheck is not None and horizon_ms >= self._recheck[1]:
            return self._recheck
        return due

    def _maybe_daily(self) -> None:
        """Start the day's over-consumption check when the horizon says it is due."""
        if self.daily is None or self._loop is None or self._daily_task is not None:
            return
        if self._loop.time() < self._daily_retry_at:
            return
        due = self._pending_check(self.core.horizon_ms)
        if due is None:
            return
        if due == self._recheck:
            self._recheck = None
        self._daily_task = self._loop.create_task(self._run_daily(*due), name="over-consumption")

    async def _run_daily(self, day: date, ts_ms: int) -> None:
        """The check reads InfluxDB: it runs in the default executor, its verdicts on the loop."""
        assert self.daily is not None and self._loop is not None
        try:
            conds = await asyncio.to_thread(self.daily.check, day, ts_ms, self.core.horizon_ms)
        except RollupNotReady as exc:
            self._rollup_missing = day
            log.debug("over-consumption: %s; tried again in %g s", exc, ROLLUP_POLL_S)
            self._daily_retry_at = self._loop.time() + ROLLUP_POLL_S
            # waiting for a rollup holds nothing back (_handled_ms): said now, since no message
            # may come to carry the progress (the run's last instant was the check's)
            self.progress.update(self._handled_ms(), len(self._inbox), force=True)
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
        self._rollup_missing = None
        if self.schedule.last != day and self.core.horizon_ms < ts_ms + int(DAILY_RECHECK_S * 1000):
            # judged once more an hour later: a meter's last readings of the day may reach
            # InfluxDB (and its daily rollup) after the first check; repeats change nothing
            self._recheck = (day, ts_ms + int(DAILY_RECHECK_S * 1000))
        self.schedule.last = day
        self.stats.daily_checks += 1
        self.stats.daily_last_day = day.isoformat()
        log.info("over-consumption check of %s: %d change(s)", day, len(conds))
        if conds:
            self._manager_change(lambda: self.core.conditions(conds))
        self.progress.update(self._handled_ms(), len(self._inbox), force=True)  # the check is done

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
            except Exception as exc:  # supervisor boundary: a round that fails before its commit is
                # rolled back by _round itself; this is a failure after it (publication, notifiers)
                self.stats.errors += 1
                self.stats.last_error = repr(exc)
                log.exception("processing round failed after its commit")
                if self._inbox:
                    self._wake.set()  # the rest of the inbox is not left waiting for a new message

    async def _housekeeping(self, period_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(period_s)
            self._manager_change(lambda: Output(events=self.core.manager.expire(self.clock.now_ms())))
            self.publish_outbox()  # acknowledgements collected, refused publishes tried again
            self.flush_idle()
            self._maybe_daily()
            if self._early:
                self._wake.set()  # messages waiting for a simulated clock are looked at again
            self._supervise()
            self.watchdog.beat()
            if self.notifier is not None:
                self.notifier.escalate(self.clock.now())

    def _supervise(self) -> None:
        """systemd: READY once connected, then WATCHDOG at each housekeeping while the loop
        makes progress. A blocked loop pings no more, and systemd restarts the engine."""
        if not self.systemd.enabled:
            return
        if not self._systemd_ready and self.connected.is_set():
            self._systemd_ready = self.systemd.ready("connected")
        reason = self.stuck()
        if reason:
            self.systemd.status(reason)
        elif self.systemd.watchdog_s > 0:
            self.systemd.watchdog()

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
        self.watchdog.start()  # after priming: the housekeeping beats from now on
        self.transport.start(self._loop)
        if self._outbox:  # stored by an engine that stopped before the broker acknowledged them
            log.info("publishing %d message(s) stored but not acknowledged before the last stop",
                     len(self._outbox))
            self.publish_outbox()
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
        self.systemd.stopping()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        while self._inflight and loop.time() < t0 + STOP_BUDGET_S / 2:  # acknowledgements on their way
            self.publish_outbox()
            await asyncio.sleep(0.01)
        await asyncio.to_thread(self.transport.stop)  # what it received meanwhile is in the inbox
        deadline = t0 + STOP_BUDGET_S
        while self._inbox and loop.time() < deadline:
            self.process_pending()
        if self._inbox:
            log.warning("stopping: %d received message(s) left unprocessed", len(self._inbox))
            self._inbox.clear()
        # the end of the stream: what waits in the reorder buffer is judged, not lost
        self._round(lambda out: out.extend(self.core.flush(self.core.max_seen_ms)), [])
        self.publish_outbox()  # acknowledged ones leave the outbox; the rest is published at next start
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
        self.systemd.close()
        self.watchdog.close()
        st = self.stats
        log.info("stopped in %.2f s; %d message(s) rejected (%d stamped in the future, %d from the wrong "
                 "source)", loop.time() - t0, st.rejected, st.rejected_future, st.rejected_source)
