"""The MQTT side: a paho client with a persistent MQTT 5 session and manual acknowledgements.

- QoS 1 subscriptions, ``clean_start=False`` and a session expiry: while the collector is
  away (crash, restart, backpressure), the broker queues its messages.
- ``manual_ack=True``: a PUBLISH is acknowledged only when :meth:`MqttSource.ack` is called,
  after InfluxDB accepted its points. A crash before that makes the broker deliver it again.
- Message ids are per connection: an acknowledgement is only sent on the connection that
  delivered the message (``epoch``); after a reconnect the broker redelivers the rest.
- Backpressure: the kernel's :class:`~aquavolt.mqtt.Transport` hands messages over through a
  bounded inbox. When the inbox is full (InfluxDB slow or down), paho's thread waits, stops
  reading the socket, and TCP pushes back to the broker, which keeps queuing for the session.
  (Mosquitto 2.0 honours the client's Receive Maximum only until the first acknowledgement,
  so it cannot be the bound.)
- ``share_group``: subscribe through ``$share/{group}/...`` so several collectors split the load
  (``direct`` filters are subscribed as they are, without our own messages: every member of
  the group gets the others' messages on those).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from paho.mqtt.subscribeoptions import SubscribeOptions

from aquavolt.backoff import Backoff
from aquavolt.mqtt import Inbound, Transport
from aquavolt.settings import MqttSettings

__all__ = ["Inbound", "MqttSource"]


class MqttSource:
    """Receives into ``inbox``; ``on_arrival`` (called in the loop, once per burst) wakes the
    consumer, which drains ``inbox`` and calls :meth:`taken`."""

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
        # retain handling 1: retained messages only for a new subscription, not at every reconnect
        opts = SubscribeOptions(qos=1, retainHandling=1)
        own = SubscribeOptions(qos=1, retainHandling=1, noLocal=True)  # not our own messages
        self.transport = Transport(
            settings, client_id,
            subscriptions=[(f, opts) for f in self.filters] + [(f, own) for f in self.direct],
            will=None if will is None else (will[0], will[1], True),
            clean_start=False, session_expiry_s=session_expiry_s, receive_maximum=receive_maximum,
            manual_ack=True, max_inbox=max_inbox, backoff=Backoff(1.0, 5.0), name="collector.mqtt")
        self.transport.on_wake = on_arrival
        self.birth = birth  # published retained once subscribed (a Sparkplug host's STATE)
        self.transport.on_connected.append(self._connected)
        self.inbox = self.transport.inbox
        self.connected = self.transport.connected
        self.subscribed = self.transport.subscribed

    def _connected(self, session_present: bool) -> None:
        if self.birth is not None:  # after the SUBSCRIBE, as Sparkplug 3.0 asks of a host
            self.transport.publish(self.birth[0], self.birth[1], qos=1, retain=True)

    def start(self) -> None:
        self.transport.start(asyncio.get_running_loop())

    def stop(self) -> None:
        self.transport.stop()

    @property
    def waiting(self) -> bool:
        return self.transport.waiting

    def taken(self) -> None:
        """The consumer took messages out of the inbox: let paho's thread go on if it waits."""
        self.transport.taken()

    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge messages delivered on the current connection; returns how many."""
        return self.transport.ack(messages)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.transport.publish(topic, payload, qos=1, retain=retain)
