"""The MQTT side: a paho client with a persistent MQTT 5 session and manual acknowledgements.

- QoS 1 subscriptions, ``clean_start=False`` and a session expiry: while the collector is
  away (crash, restart, backpressure), the broker queues its messages.
- ``manual_ack=True``: a PUBLISH is acknowledged only when :meth:`MqttSource.ack` is called,
  after InfluxDB accepted its points. A crash before that makes the broker deliver it again.
- Message ids are per connection: an acknowledgement is only sent on the connection that
  delivered the message (``epoch``); after a reconnect the broker redelivers the rest.
- Backpressure: paho's network thread hands messages over through a bounded inbox. When the
  inbox is full (InfluxDB slow or down), the thread waits, stops reading the socket, and TCP
  pushes back to the broker, which keeps queuing for the session. (Mosquitto 2.0 honours the
  client's Receive Maximum only until the first acknowledgement, so it cannot be the bound.)
- ``share_group``: subscribe through ``$share/{group}/...`` so several collectors split the load
  (``direct`` filters are subscribed as they are, without our own messages: every member of
  the group gets the others' messages on those).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from aquavolt.logs import OnceLogger
from aquavolt.mqtt import make_client
from aquavolt.settings import MqttSettings

log = logging.getLogger("aquavolt.collector.mqtt")


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    epoch: int


class MqttSource:
    """Receives into ``inbox``; ``on_arrival`` (called from paho's thread) wakes the consumer."""

    def __init__(self, settings: MqttSettings, client_id: str, filters: list[str],
                 share_group: str | None = None, session_expiry_s: int = 86400,
                 direct: list[str] | None = None,
                 receive_maximum: int = 1000, max_inbox: int = 2000,
                 on_arrival: Callable[[], None] = lambda: None,
                 will: tuple[str, bytes] | None = None, birth: tuple[str, bytes] | None = None) -> None:
        self.settings = settings
        self.client_id = client_id
        self.filters = [f"$share/{share_group}/{f}" if share_group else f for f in filters]
        self.direct = list(direct or [])
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.max_inbox = max_inbox
        self.on_arrival = on_arrival
        self.inbox: collections.deque[Inbound] = collections.deque()
        self.epoch = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.waiting = False  # paho's thread is holding back (backpressure)
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self._stopping = False
        self._once = OnceLogger(log)
        c = make_client(settings, client_id)
        c.manual_ack_set(True)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.birth = birth  # published retained once subscribed (a Sparkplug host's STATE)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        self.client = c

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        with self._room:
            self._room.notify_all()
        self.client.disconnect()
        self.client.loop_stop()

    # paho's thread
    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags,
                    rc: ReasonCode, _p: object = None) -> None:
        if rc.is_failure:
            self._once.failure("mqtt", f"{self.settings.host}:{self.settings.port} refused: {rc}")
            return
        with self._lock:
            self.epoch += 1
        self._once.recovered("mqtt")
        log.info("connected to %s:%s as %s (session present: %s)", self.settings.host,
                 self.settings.port, self.client_id, flags.session_present)
        # retain handling 1: retained messages only for a new subscription, not at every reconnect
        opts = SubscribeOptions(qos=1, retainHandling=1)
        own = SubscribeOptions(qos=1, retainHandling=1, noLocal=True)  # not our own messages
        client.subscribe([(f, opts) for f in self.filters] + [(f, own) for f in self.direct])
        if self.birth is not None:  # after the SUBSCRIBE, as Sparkplug 3.0 asks of a host
            client.publish(self.birth[0], self.birth[1], qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                       _p: object = None) -> None:
        with self._lock:
            self.epoch += 1
        self.connected.clear()
        if not self._stopping:
            self._once.failure("mqtt", f"disconnected from {self.settings.host}:"
                                       f"{self.settings.port}: {rc}")

    def _on_subscribe(self, *_: object) -> None:
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload if type(msg.payload) is bytes else bytes(msg.payload)
        self.inbox.append(Inbound(msg.topic, payload, msg.mid, msg.qos, self.epoch))
        self.on_arrival()
        if len(self.inbox) >= self.max_inbox:
            self.waiting = True
            with self._room:
                while len(self.inbox) > self.max_inbox // 2 and not self._stopping:
                    self._room.wait(0.5)
            self.waiting = False

    # the consumer's side
    def taken(self) -> None:
        """The consumer took messages out of the inbox: let paho's thread go on if it waits."""
        if self.waiting:
            with self._room:
                self._room.notify_all()

    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge messages delivered on the current connection; returns how many."""
        sent = 0
        with self._lock:
            epoch = self.epoch
            for m in messages:
                if m.qos and m.epoch == epoch:
                    self.client.ack(m.mid, m.qos)
                    sent += 1
        return sent

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
