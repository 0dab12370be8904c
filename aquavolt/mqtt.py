"""MQTT for every component: :class:`Transport`, the one supervised client (paho-mqtt,
configured from :class:`MqttSettings`: TLS, passwords, MQTT 5) and its bridge to asyncio,
and :class:`Recorder`, a threaded subscriber that records what it receives (tests, judge).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from aquavolt.backoff import Backoff
from aquavolt.logs import OnceLogger
from aquavolt.settings import MqttSettings


class _Burst:
    """One posted call to the loop for whatever paho's thread hands over meanwhile: the
    thread appends, then :meth:`due` says whether a call must be posted; the loop calls
    :meth:`taking` before it takes what was appended (so nothing appended later is missed)."""

    __slots__ = ("_lock", "_posted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posted = False

    def due(self) -> bool:
        with self._lock:
            post = not self._posted
            self._posted = True
            return post

    def taking(self) -> None:
        with self._lock:
            self._posted = False


class LoopBridge:
    """Callbacks from paho's network thread, run in the owner's asyncio loop while it is open.

    ``open`` when the owner starts (in its loop), ``close`` when it stops: a callback posted
    before the close but reaching the loop after it is dropped, since the owner closes its
    state next (an edge's stored mark once ran on its closed store). What such a callback
    carried comes again at the next start (acknowledgements are reset, marks are retained)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()

    def close(self) -> None:
        self.loop = None

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._run, fn, args)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self.loop is not None:
            fn(*args)


def make_client(
    settings: MqttSettings,
    client_id: str,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    max_queued: int = 0,
) -> mqtt.Client:
    """A paho client with credentials and TLS from the settings; not yet connected."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        if settings.cert_file:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
        client.tls_set_context(ctx)
    client.max_inflight_messages_set(100)
    client.on_socket_open = _no_delay
    if max_queued:
        client.max_queued_messages_set(max_queued)
    return client


def _no_delay(_c: mqtt.Client, _u: object, sock: object) -> None:
    """Small packets leave at once (no Nagle wait for the ACK of the previous one): a
    lockstep run exchanges a few small messages per simulated instant."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_properties(session_expiry_s: int = 0) -> Properties:
    from paho.mqtt.packettypes import PacketTypes

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    return props


class State(enum.StrEnum):
    """Where a :class:`Transport` is; written by paho's thread, read by anyone."""

    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # the first connection is on its way
    CONNECTED = "connected"  # CONNACK accepted
    RETRYING = "retrying"  # lost or refused: waiting its backoff before the next try
    STOPPED = "stopped"


@dataclass(slots=True)
class Inbound:
    """A received message. ``epoch`` names the connection that delivered it: a manual
    acknowledgement is sent only on that connection (message ids are per connection)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    epoch: int


Subscription = tuple[str, int | SubscribeOptions]

MAX_OUTSTANDING = 60_000
"""Messages paho may hold unacknowledged at most (queued and in flight): message ids are
16 bits and handed out in turn, so keeping well under 65,535 outstanding means a new id is
never one still waiting for its PUBACK. The transports' ``max_queued`` is capped to it."""


class Transport:
    """The project's one MQTT client: a supervised paho session and its bridge to asyncio.

    - **Supervised**: paho's network thread connects and reconnects; every wait between two
      tries is drawn from a :class:`~aquavolt.backoff.Backoff` (jittered, capped), reset by
      a successful CONNACK. :attr:`state` says where it is (:class:`State`), and the counters
      (``connects``, ``losses``, ``refused``, ``handler_errors``, ``collisions``) what happened.
    - **One bridge, or none**: started with a loop, everything paho's thread hands over
      (messages, PUBACKs, connections and losses) runs in that loop, in bursts (one wake-up
      for whatever arrived meanwhile), and only while the transport is open: what reaches
      the loop after :meth:`stop` is dropped, as its owner closes its state next. Started
      without a loop (tools and test recorders), handlers run in paho's thread.
    - **Backpressure**: messages wait in :attr:`inbox`; when ``max_inbox`` wait, paho's
      thread stops reading the socket until the owner has taken half of them
      (:meth:`taken`), and TCP pushes back to the broker, which queues for the session.
    - **Publish results**: :meth:`publish` returns the message id when paho holds the
      message (sent, or queued for the next connection), ``None`` when it was refused
      (counted and logged once per reason); a PUBACK is reported with its id.
    - **Message ids**: at most ``max_queued`` (capped to :data:`MAX_OUTSTANDING`) are
      outstanding, so ids never wrap onto a message still in flight; if one ever did, it is
      counted in ``collisions`` (the owner, whose map of ids then holds two messages under
      one id, sends the older one again).

    Subscriptions are made again on every connection, then ``on_connected(session_present)``
    hooks run: a will, a birth and the session's options are set before :meth:`start`.
    """

    def __init__(self, settings: MqttSettings, client_id: str, *,
                 subscriptions: Iterable[Subscription] = (),
                 will: tuple[str, bytes, bool] | None = None,
                 clean_start: bool | Literal[3] = mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                 session_expiry_s: int | None = None,
                 receive_maximum: int = 0, manual_ack: bool = False,
                 max_inbox: int = 10_000, max_queued: int = 10_000, max_inflight: int = 100,
                 backoff: Backoff | None = None, name: str = "mqtt") -> None:
        self.settings = settings
        self.client_id = client_id
        self.name = name
        self.subscriptions: list[Subscription] = list(subscriptions)
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.manual_ack = manual_ack
        self.max_inbox = max(1, max_inbox)
        self.backoff = backoff or Backoff(1.0, 30.0)
        self.state = State.IDLE
        self.last_error = ""
        self.connects = 0
        self.losses = 0  # connections lost, or attempts that failed
        self.refused = 0  # publishes paho did not take
        self.handler_errors = 0
        self.collisions = 0
        self.epoch = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the SUBACK of the current connection's subscriptions
        self.inbox: collections.deque[Inbound] = collections.deque()
        self.waiting = False  # paho's thread is holding back (backpressure)
        self.inbox_since = time.monotonic()  # when the inbox last went from empty to not
        # handlers, run in the loop (or in paho's thread when started without one)
        self.on_message: Callable[[Inbound], None] | None = None
        """One message; without it, ``on_wake`` is called and the owner drains :attr:`inbox`."""
        self.on_wake: Callable[[], None] = _nothing
        self.on_pubacks: Callable[[list[int]], None] | None = None
        self.on_connected: list[Callable[[bool], None]] = []
        self.on_lost: list[Callable[[str], None]] = []
        self.on_subscribed: list[Callable[[], None]] = []
        """Run once the broker acknowledged a connection's subscriptions (SUBACK): from then
        on, nothing published to them is missed."""
        self.next_will: Callable[[], tuple[str, bytes, bool]] | None = None
        """Called in paho's thread when a connection ends, before paho connects again: the
        will of the next connection (a Sparkplug NDEATH names its session's bdSeq)."""
        self._bridge = LoopBridge()
        self._threaded = False
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self._stopping = False
        self._messages_burst = _Burst()
        self._pubacks: collections.deque[int] = collections.deque()
        self._pubacks_burst = _Burst()
        self._outstanding: set[int] = set()  # QoS > 0 ids published from the loop, no PUBACK yet
        self._log = logging.getLogger(f"aquavolt.{name}")
        self._once = OnceLogger(self._log)
        self.while_away = ""
        """Said after a connection failure (the edge: "; buffering on disk")."""
        c = make_client(settings, client_id, max_queued=min(max(1, max_queued), MAX_OUTSTANDING))
        c.max_inflight_messages_set(max_inflight)
        if manual_ack:
            c.manual_ack_set(True)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=will[2])
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        self.client = c

    # ------------------------------------------------------------ lifecycle
    def set_will(self, topic: str, payload: bytes, retain: bool) -> None:
        """The will of the next connection (a Sparkplug NDEATH carries the session's bdSeq)."""
        self.client.will_set(topic, payload, qos=1, retain=retain)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Connect in paho's thread (retrying with the backoff); handlers run in ``loop``, or
        in paho's thread when it is ``None``."""
        self._stopping = False
        self._threaded = loop is None
        if loop is not None:
            self._bridge.open(loop)
        self._messages_burst.taking()
        self._pubacks_burst.taking()
        self._pubacks.clear()
        self._outstanding.clear()
        self.state = State.CONNECTING
        self._retry_in(self.backoff.first_s)
        props = None
        if self.session_expiry_s is not None or self.receive_maximum:
            props = connect_properties(self.session_expiry_s or 0)
            if self.receive_maximum:
                props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s,
                                  clean_start=self.clean_start, properties=props)
        self.client.loop_start()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Started without a loop, run the handlers in ``loop`` from now on (a component's
        clock connects before its loop exists)."""
        self._bridge.open(loop)
        self._threaded = False

    def wait_connected(self, timeout_s: float) -> bool:
        """For tools and tests outside a loop: until the first SUBACK (or CONNACK)."""
        ev = self.subscribed if self.subscriptions else self.connected
        return ev.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect (the will is not sent) and end paho's thread. Blocks for as long as the
        thread takes to end: from a loop, run it with ``asyncio.to_thread``."""
        self._stopping = True
        self._bridge.close()
        with self._room:
            self._room.notify_all()
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self.state = State.STOPPED

    # ------------------------------------------------------------ publishing
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """The message id when paho holds the message (sent, or kept for the next connection
        when QoS > 0), ``None`` when refused: not connected at QoS 0, paho's queue full, or a
        payload paho cannot take. Call it from the loop (or any thread when threaded)."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, TypeError) as exc:
            self._refuse(topic, f"not publishable: {exc}")
            return None
        rc = info.rc
        if rc == mqtt.MQTT_ERR_SUCCESS or (rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            if qos > 0 and not self._threaded:
                if info.mid in self._outstanding:
                    self.collisions += 1
                    self._log.error("%s: message id %d handed out again while in flight", self.name, info.mid)
                self._outstanding.add(info.mid)
            return info.mid
        reason = ("not connected (QoS 0 is not kept)" if rc == mqtt.MQTT_ERR_NO_CONN
                  else "paho's queue is full" if rc == mqtt.MQTT_ERR_QUEUE_SIZE
                  else mqtt.error_string(rc))
        self._refuse(topic, reason)
        return None

    def _refuse(self, topic: str, reason: str) -> None:
        self.refused += 1
        self._once.failure(f"{self.name} publish", f"a publish on {topic} was refused: {reason}")

    def ack(self, messages: Iterable[Inbound]) -> int:
        """Acknowledge (manual ack) messages delivered on the current connection; how many."""
        sent = 0
        with self._lock:
            epoch = self.epoch
            for m in messages:
                if m.qos and m.epoch == epoch:
                    self.client.ack(m.mid, m.qos)
                    sent += 1
        return sent

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def acknowledged(self, mid: int) -> bool:
        """Whether the broker acknowledged the QoS > 0 message published under ``mid``."""
        return mid not in self._outstanding

    # ------------------------------------------------------------ the owner's side of the inbox
    def taken(self) -> None:
        """The owner took messages out of :attr:`inbox`: paho's thread goes on if it waits."""
        if self.waiting:
            with self._room:
                self._room.notify_all()

    # ------------------------------------------------------------ paho's thread
    def _retry_in(self, seconds: float) -> None:
        d = max(0.001, seconds)  # paho's annotation says int; it sleeps any float
        self.client.reconnect_delay_set(d, d)  # type: ignore[arg-type]

    def _failed(self, reason: str) -> None:
        self.losses += 1
        self.last_error = reason
        if not self._stopping:
            self.state = State.RETRYING
            wait = self.backoff.next()
            self._retry_in(wait)  # paho waits that long before its next try

    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    _p: object = None) -> None:
        if rc.is_failure:
            self._once.failure(self.name, f"broker {self.settings.describe()} refused {self.client_id}: {rc}")
            self._failed(f"refused: {rc}")
            return
        with self._lock:
            self.epoch += 1
        self.backoff.reset()
        self._retry_in(self.backoff.first_s)
        self.connects += 1
        self.state = State.CONNECTED
        self.subscribed.clear()
        if self.subscriptions:
            client.subscribe(list(self.subscriptions))  # type: ignore[arg-type]
        self.connected.set()
        self._once.recovered(self.name)
        self._log.info("connected to %s as %s (session present: %s)", self.settings.describe(),
                       self.client_id, bool(flags.session_present))
        self._post(self._connected, bool(flags.session_present))

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        self._once.failure(self.name, f"broker {self.settings.describe()} unreachable{self.while_away}")
        self._failed("unreachable")

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                       _p: object = None) -> None:
        with self._lock:
            self.epoch += 1
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            return
        if self.next_will is not None:
            topic, payload, retain = self.next_will()
            self.client.will_set(topic, payload, qos=1, retain=retain)
        self._once.failure(self.name, f"disconnected from {self.settings.describe()} ({rc}){self.while_away}")
        self._failed(f"lost: {rc}")
        self._post(self._lost, str(rc))

    def _on_subscribe(self, *_: object) -> None:
        self.subscribed.set()
        if self.on_subscribed:
            self._post(self._subscribed_hooks)

    def _subscribed_hooks(self) -> None:
        for hook in list(self.on_subscribed):
            self._call(hook)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload if type(msg.payload) is bytes else bytes(msg.payload)
        m = Inbound(msg.topic, payload, msg.mid, msg.qos, bool(msg.retain), self.epoch)
        if self._threaded:
            self._handle(m)
            return
        if not self.inbox:
            self.inbox_since = time.monotonic()  # work waits from now (an owner's watchdog)
        self.inbox.append(m)
        if self._messages_burst.due():
            self._bridge.post(self._wake)
        if len(self.inbox) >= self.max_inbox:
            self.waiting = True
            with self._room:
                while len(self.inbox) > self.max_inbox // 2 and not self._stopping:
                    self._room.wait(0.5)
            self.waiting = False

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object = None) -> None:
        if self._threaded:
            return
        self._pubacks.append(mid)
        if self._pubacks_burst.due():
            self._bridge.post(self._take_pubacks)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._threaded:
            fn(*args)
        else:
            self._bridge.post(fn, *args)

    # ------------------------------------------------------------ the loop
    def _wake(self) -> None:
        self._messages_burst.taking()
        if self.on_message is None:
            self.on_wake()
            return
        inbox = self.inbox
        while inbox:
            self._handle(inbox.popleft())
        self.taken()

    def _handle(self, m: Inbound) -> None:
        assert self.on_message is not None or self._threaded
        if self.on_message is None:
            return
        try:
            self.on_message(m)
        except Exception:  # one message's handler must not end the bridge for the others
            self.handler_errors += 1
            self._log.exception("%s: handling a message on %s failed", self.name, m.topic)

    def _take_pubacks(self) -> None:
        self._pubacks_burst.taking()
        acks = []
        pubacks = self._pubacks
        while pubacks:
            acks.append(pubacks.popleft())
        self._outstanding.difference_update(acks)
        if self.on_pubacks is not None and acks:
            self._call(self.on_pubacks, acks)

    def _connected(self, session_present: bool) -> None:
        for hook in list(self.on_connected):
            self._call(hook, session_present)

    def _lost(self, reason: str) -> None:
        for hook in list(self.on_lost):
            self._call(hook, reason)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.handler_errors += 1
            self._log.exception("%s: a handler failed", self.name)


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    received: float


class Recorder:
    """Subscribes to topic filters in a background thread and records every message.

    Use as a context manager; ``wait_for(predicate, timeout)`` polls the record.
    """

    def __init__(self, settings: MqttSettings, filters: Iterable[str], client_id: str,
                 qos: int = 1, session_expiry_s: int | None = None) -> None:
        self.settings = settings
        self.filters = list(filters)
        self.qos = qos
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        # with a session expiry, a persistent session: the broker keeps QoS 1 messages for it
        # while it is disconnected or the broker restarts
        self.transport = Transport(settings, client_id, subscriptions=[(f, qos) for f in self.filters],
                                   clean_start=session_expiry_s is None, session_expiry_s=session_expiry_s,
                                   name="recorder")
        self.transport.on_message = self._on_message
        self.client = self.transport.client

    def _on_message(self, m: Inbound) -> None:
        with self._lock:
            self.messages.append(Message(m.topic, m.payload, m.retain, m.qos, time.monotonic()))

    def __enter__(self) -> Recorder:
        self.transport.start()
        if not self.transport.wait_connected(10):
            self.transport.stop()
            raise TimeoutError(f"no SUBACK from {self.settings.host}:{self.settings.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.transport.stop()

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())
