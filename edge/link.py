"""The MQTT side of the agent: one paho-mqtt session, store and forward, birth and death.

Data messages go through the :class:`~edge.store.Store`: each is committed to disk first,
then published with QoS 1, marked ``acked`` when its PUBACK comes back, and deleted only when
the collector's stored mark (retained on ``{prefix}/gw/{gw}/stored``) says InfluxDB has it: a
broker acknowledges before it persists, and loses what it held when it crashes. So after every
(re)connection everything after the stored mark is sent again, and a ``resend`` request of
the collector (a gap it saw) sends a range again, answered on ``resent`` with the seqs the
store no longer holds. Two lanes share the session:

- live: a message committed while the session is up is published at once, while fewer
  than ``live_window`` live messages wait for their PUBACK;
- replay: everything else in the store (an outage's backlog, or what a restart found) is
  sent in ``seq`` order, flagged ``historical``, with at most ``replay_window`` messages
  unacknowledged (and at most ``replay_max_msgs_per_s`` when set), so the backlog never
  holds live data back and paho's queue never grows past the two windows.

paho keeps a message that was handed to it until its PUBACK, and sends it again after a
reconnect, so a message is in exactly one place: the store (not yet sent) or paho's window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aquavolt.backoff import Backoff
from aquavolt.clock import Clock
from aquavolt.edge.store import Row, Store
from aquavolt.errors import WireError
from aquavolt.logs import OnceLogger
from aquavolt.mqtt import MAX_OUTSTANDING, Inbound, Transport
from aquavolt.profiles import PointClass
from aquavolt.settings import MqttSettings
from aquavolt.wire import MAX_LOST_RANGES, ResendRequest, ResendResult, StoredMark, decode, encode

log = logging.getLogger("aquavolt.edge.mqtt")

Birth = Callable[[], list[tuple[str, bytes]]]
OnMessage = Callable[[str, bytes, bool], None]
"""(topic, payload, retained): a retained message was published before we subscribed."""


class Link:
    def __init__(self, settings: MqttSettings, client_id: str, store: Store, clock: Clock,
                 will: tuple[str, bytes], live_window: int = 1000, replay_window: int = 100,
                 replay_max_msgs_per_s: float = 0.0, commit_interval_s: float = 0.0) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.live_window = live_window
        self.replay_window = replay_window
        self.replay_rate = replay_max_msgs_per_s
        self.commit_interval_s = commit_interval_s
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.birth: Birth = list
        self.on_message: OnMessage = lambda _t, _p, _r: None
        self.subscriptions: list[str] = []
        self.gateway = ""
        self.bd_seq = 0
        self.stored_topic = ""  # the collector's stored mark for this gateway ("" : none)
        self.resend_topic = ""
        self.resent_topic = ""
        self.resend_requests = 0
        self.marks = 0
        self.on_connected: list[Callable[[], None]] = []
        self.connected = False
        self.connects = 0
        self.published_live = 0
        self.published_replay = 0
        self._inflight: dict[int, tuple[int, bool]] = {}  # mid -> (seq, replay lane)
        self._out: set[int] = set()  # seqs handed to paho and not yet deleted from the store
        self._live_n = 0
        self._replay_n = 0
        self._cursor = -1
        self._rewinds = 0  # the cursor was moved back: a replay pass in progress starts again
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self._acks = asyncio.Event()
        self._plain: set[int] = set()  # mids of QoS 1 messages outside the store, not acked yet
        self._flush_scheduled = False
        self._refused = False  # paho refused a stored message: the replay lane waits for a PUBACK
        self._syncer: ThreadPoolExecutor | None = None  # fsyncs the store's commits, in order
        self._syncing: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._once = OnceLogger(log)
        # paho's queue holds what the two windows and the plain messages let out, far below
        # the transport's bound on outstanding message ids
        self.transport = Transport(settings, client_id, will=(will[0], will[1], True), max_inflight=100,
                                   max_queued=MAX_OUTSTANDING, max_inbox=1000,
                                   backoff=Backoff(1.0, 30.0), name="edge.mqtt")
        self.transport.while_away = "; buffering on disk"
        self.transport.on_connected.append(lambda _session: self._connected())
        self.transport.on_lost.append(self._disconnected)
        self.transport.on_pubacks = self._take_pubacks
        self.transport.on_message = self._on_message

    # ------------------------------------------------------------ from the transport (in the loop)
    def _take_pubacks(self, mids: list[int]) -> None:
        for mid in mids:
            self._puback(mid)
        if self._refused:  # paho has room again
            self._refused = False
            self._wake.set()

    def _on_message(self, msg: Inbound) -> None:
        if msg.topic == self.stored_topic:
            self._stored(msg.payload)
        elif msg.topic == self.resend_topic:
            self._resend(msg.payload)
        else:
            self.on_message(msg.topic, msg.payload, msg.retain)

    def acknowledgements(self, gateway: str, bd_seq: int, stored: str, resend: str, resent: str) -> None:
        """Take the collector's stored marks and resend requests on these topics."""
        self.gateway, self.bd_seq = gateway, bd_seq
        self.stored_topic, self.resend_topic, self.resent_topic = stored, resend, resent
        self.subscriptions += [stored, resend]

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.store.sync_wal and self._syncer is None:
            self._syncer = ThreadPoolExecutor(1, thread_name_prefix="edge-fsync")
            self.store.sync_in_commit = False
        self.transport.subscriptions = [(t, 1) for t in self.subscriptions]
        self.transport.start(self._loop)
        self._tasks = [asyncio.create_task(self._replay(), name="mqtt-replay"),
                       asyncio.create_task(self._housekeeping(), name="mqtt-housekeeping")]

    async def stop(self, last_words: tuple[str, bytes] | None = None, timeout_s: float = 3.0) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._flush()
        if self._syncing is not None:  # the last commit on the card, then published
            await asyncio.gather(self._syncing, return_exceptions=True)
            await asyncio.sleep(0)
        if last_words is not None and self.connected:
            self.transport.publish(last_words[0], last_words[1], qos=1, retain=True)
        deadline = time.monotonic() + timeout_s
        while self.connected and self._inflight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        self._delete_acked()
        # what paho hands over from now on is dropped: the store closes next (acknowledgements
        # are reset at the next start, marks are retained)
        await asyncio.to_thread(self.transport.stop)
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
            self._syncer = None
            self.store.sync_in_commit = True
        self._loop = None

    def _connected(self) -> None:
        self.connected = True
        self.connects += 1
        self._once.recovered("mqtt")
        # A new connection may be to a broker that lost what it had acknowledged (a crash
        # between two autosaves): everything after the stored mark goes again.
        self._delete_acked()
        again = self.store.unack(self.store.stored_seq + 1)
        self._rewind(self.store.stored_seq)
        log.info("connected to %s; %d messages after the stored mark %d to send", self.settings.describe(),
                 again, self.store.stored_seq)
        for topic, payload in self.birth():
            self.transport.publish(topic, payload, qos=1, retain=True)
        for hook in self.on_connected:
            hook()
        self._wake.set()

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning("broker connection lost (%s); buffering on disk", reason)
        self.connected = False
        self._plain.clear()  # paho sends them again after the reconnect, or they were lost

    # ------------------------------------------------------------ data path
    def submit(self, topic: str, build: Callable[[int], bytes], cls: PointClass, created_ms: int) -> int:
        """Queue one data message; ``build(seq)`` makes its payload. Returns its seq."""
        seq = self.store.take_seq()
        self.store.add(seq, topic, build(seq), cls, created_ms)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            if self.commit_interval_s > 0:
                self._flush_handle = self._loop.call_later(self.commit_interval_s, self._flush)
            else:
                self._flush_handle = self._loop.call_soon(self._flush)
        return seq

    def _flush(self) -> None:
        """Commit what was submitted (one transaction), then publish it live if possible.

        Submissions are grouped for ``commit_interval_s`` (the polls of a cycle are spread
        over it by the stagger): one transaction, one WAL append, instead of one per batch.
        Nothing is published before its commit is on the card (``Store.sync``, in the
        worker thread: the loop goes on polling meanwhile)."""
        self._flush_scheduled = False
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        rows = self.store.commit()
        if not rows:
            return
        if self._syncer is not None and self._loop is not None:
            fut = self._loop.run_in_executor(self._syncer, self.store.sync)
            fut.add_done_callback(lambda f: self._durable(rows, f))
            self._syncing = fut
        else:  # not started: the commit was synced; or NORMAL: no fsync of ours
            self._durable(rows, None)

    def _durable(self, rows: list[Row], synced: asyncio.Future[None] | None) -> None:
        """A commit is on the card: its messages may go (live now, else by the replay lane)."""
        if synced is not None and not synced.cancelled() and synced.exception() is not None:
            self._once.failure("store-sync", f"store: fsync failed: {synced.exception()}")
        self.store.durable_seq = max(self.store.durable_seq, rows[-1].seq)
        for row in rows:
            if self.connected and self._live_n < self.live_window:
                mid = self.transport.publish(row.topic, row.payload, qos=1)
                if mid is None:  # refused: the replay lane sends it once paho takes messages again
                    self._refused = True
                    self._wake.set()
                    continue
                self._sent(mid, row.seq, False)
                self._live_n += 1
                self.published_live += 1
            else:
                self._wake.set()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """A message outside the store (status, health, replies); dropped when offline."""
        if not self.connected:
            return False
        mid = self.transport.publish(topic, payload, qos=qos, retain=retain)
        if mid is None:
            return False
        if qos > 0:
            self._plain.add(mid)
        return True

    def _sent(self, mid: int, seq: int, replay: bool) -> None:
        """A stored message handed to paho under ``mid``. Should the id still name an older
        message (ids wrap; the transport bounds what is outstanding so that it does not), the
        older one is sent again by the replay lane: it is still in the store."""
        old = self._inflight.get(mid)
        if old is not None:
            self._out.discard(old[0])
            if old[1]:
                self._replay_n -= 1
            else:
                self._live_n -= 1
            self._rewind(min(self._cursor, old[0] - 1))
        self._inflight[mid] = (seq, replay)
        self._out.add(seq)

    async def drained(self) -> None:
        """Wait until every message submitted or published so far has been acknowledged by
        the broker (a lockstep participant says it is done with an instant only then)."""
        if self._flush_scheduled:
            self._flush()
        while True:
            self._delete_acked()
            if self.store.pending == 0 and self.store.waiting == 0 and not self._plain:
                return
            self._acks.clear()
            await self._acks.wait()

    def _puback(self, mid: int) -> None:
        self._acks.set()
        if mid in self._plain:
            self._plain.discard(mid)
            return
        hit = self._inflight.pop(mid, None)
        if hit is None:
            return
        seq, replay = hit
        if replay:
            self._replay_n -= 1
            self._wake.set()
        else:
            self._live_n -= 1
        self._acked.append(seq)
        if len(self._acked) >= 500:
            self._delete_acked()

    def _delete_acked(self) -> None:
        """Record the broker's acknowledgements (the rows stay until the stored mark)."""
        acked, self._acked = self._acked, []
        self.store.ack(acked)
        self._out.difference_update(acked)

    # ------------------------------------------------------------ end-to-end acknowledgement
    def _stored(self, payload: bytes) -> None:
        try:
            mark = decode(payload, StoredMark)
        except WireError as exc:
            log.warning("stored mark refused: %s", exc)
            return
        if mark.gateway != self.gateway:
            return
        if mark.bd_seq > self.bd_seq or mark.seq >= self.store.next_seq:
            # not this store's history (a store replaced, or another gateway's mark)
            log.warning("stored mark seq %d (bd_seq %d) is ahead of this store (next seq %d, bd_seq %d): "
                        "ignored", mark.seq, mark.bd_seq, self.store.next_seq, self.bd_seq)
            return
        self.marks += 1
        self._delete_acked()
        self.store.forget_through(mark.seq)

    def _resend(self, payload: bytes) -> None:
        try:
            req = decode(payload, ResendRequest)
        except WireError as exc:
            log.warning("resend request refused: %s", exc)
            return
        if req.gateway != self.gateway:
            return
        self.resend_requests += 1
        self._delete_acked()
        lost = self.store.missing(req.from_seq, req.to_seq, MAX_LOST_RANGES)
        held = self.store.unack(req.from_seq, req.to_seq)
        self._rewind(min(self._cursor, req.from_seq - 1))
        size = sum(b - a + 1 for a, b in lost)
        log.log(logging.WARNING if lost else logging.INFO,
                "collector asks for seq %d..%d again: %d held, sent again; %d dropped from the store",
                req.from_seq, req.to_seq, held, size)
        self.publish(self.resent_topic, encode(ResendResult(
            gateway=self.gateway, from_seq=req.from_seq, to_seq=req.to_seq, resent=held, lost=lost,
            stored_seq=self.store.stored_seq, ts_ms=self.clock.now_ms())))

    def _rewind(self, cursor: int) -> None:
        self._cursor = cursor
        self._rewinds += 1
        self._wake.set()

    async def _replay(self) -> None:
        sent_at = time.monotonic()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.connected:
                self._delete_acked()
                rows = self.store.scan(self._cursor, 200)
                rewinds = self._rewinds
                if not rows:
                    break
                wait = False  # for a wake-up: an fsync, or a PUBACK after a refusal
                for row in rows:
                    if rewinds != self._rewinds:
                        break  # scan again from where the cursor was moved back to
                    if row.seq > self.store.durable_seq:
                        wait = True  # committed, not on the card yet: its fsync wakes us
                        break
                    if row.seq in self._out:  # paho has it (and resends it itself)
                        self._cursor = row.seq
                        continue
                    while self.connected and self._replay_n >= self.replay_window:
                        self._wake.clear()
                        await self._wake.wait()
                    if not self.connected:
                        break
                    if self.replay_rate > 0:
                        gap = sent_at + 1.0 / self.replay_rate - time.monotonic()
                        if gap > 0:
                            await asyncio.sleep(gap)
                        sent_at = time.monotonic()
                    if rewinds != self._rewinds:
                        break  # scan again from where the cursor was moved back to
                    if row.seq in self._out or not self.connected:
                        continue
                    payload = row.payload.replace(b'"historical":false', b'"historical":true', 1)
                    mid = self.transport.publish(row.topic, payload, qos=1)
                    if mid is None:  # refused (paho's queue is full): again after a PUBACK
                        self._refused = wait = True
                        break
                    self._sent(mid, row.seq, True)
                    self._replay_n += 1
                    self.published_replay += 1
                    self._cursor = row.seq
                if wait:
                    break
                await asyncio.sleep(0)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._delete_acked()
            dropped = self.store.prune(self.clock.now_ms())
            if dropped:
                log.warning("store: dropped %d messages older than %.0f s", dropped, self.store.max_age_s)

    # ------------------------------------------------------------ figures
    @property
    def unacked(self) -> int:
        return len(self._inflight)
