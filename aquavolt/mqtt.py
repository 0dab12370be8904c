"""paho-mqtt clients configured from :class:`MqttSettings` (TLS, passwords, MQTT 5),
and a small threaded subscriber that records what it receives (tests, replay judge).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from aquavolt.settings import MqttSettings


class LoopBridge:
    """Callbacks from paho's network thread, run in the owner's asyncio loop while it is open.

    ``open`` when the owner starts (in its loop), ``close`` when it stops: a callback posted
    before the close but reaching the loop after it is dropped, since the owner closes its
    state next (an edge's stored mark once ran on its closed store). What such a callback
    carried comes again at the next start (acknowledgements are reset, marks are retained)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        self.loop = asyncio.get_running_loop()

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
                 qos: int = 1) -> None:
        self.settings = settings
        self.filters = list(filters)
        self.qos = qos
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object = None) -> None:
        if not rc.is_failure:
            client.subscribe([(f, self.qos) for f in self.filters])

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos,
                                         time.monotonic()))

    def __enter__(self) -> Recorder:
        self.client.connect(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.client.loop_stop()
            raise TimeoutError(f"no SUBACK from {self.settings.host}:{self.settings.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

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
