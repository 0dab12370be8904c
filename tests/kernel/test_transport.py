"""The one MQTT transport (``aquavolt.mqtt.Transport``) against a real Mosquitto: its states
through a broker's death and return, its jittered capped backoff, backpressure without
loss, refused publishes, a failing handler, and nothing run after the stop."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from aquavolt.backoff import Backoff
from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.mqtt import Inbound, State, Transport
from aquavolt.settings import MqttSettings


async def until(cond: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Wait for a condition that events (paho's thread, the loop) make true."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_backoff_is_jittered_capped_and_reset() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(7))
    waits = [b.next() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    assert len(set(waits)) == len(waits)  # jittered: clients that failed together spread out
    b.reset()
    assert b.next() <= 0.5


def test_states_through_a_broker_death_and_return(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "m")
    broker.start()
    settings = broker.settings()
    got: list[str] = []
    sessions: list[bool] = []
    lost: list[str] = []

    async def main() -> None:
        t = Transport(settings, "t-states", subscriptions=[("t/#", 1)], backoff=Backoff(0.05, 0.2),
                      name="test.mqtt")
        t.on_message = lambda m: got.append(m.payload.decode())
        t.on_connected.append(sessions.append)
        t.on_lost.append(lost.append)
        assert t.state is State.IDLE
        t.start(asyncio.get_running_loop())
        assert await until(t.subscribed.is_set)
        assert t.state is State.CONNECTED and t.connects == 1
        assert t.publish("t/a", b"one") is not None
        assert await until(lambda: got == ["one"])
        broker.kill()
        assert await until(lambda: t.state is State.RETRYING and t.losses >= 3)
        assert lost and not t.connected.is_set()
        assert t.backoff.failures >= 3  # each try waited its backoff (capped at 0.2 s here)
        broker.start()
        assert await until(lambda: t.state is State.CONNECTED and t.subscribed.is_set())
        assert t.connects == 2 and t.backoff.failures == 0
        t.publish("t/a", b"two")  # the subscription was made again on the new connection
        assert await until(lambda: got == ["one", "two"])
        await asyncio.to_thread(t.stop)
        assert t.state is State.STOPPED

    try:
        asyncio.run(main())
    finally:
        broker.stop()
    assert sessions == [False, False]


def test_a_broker_that_never_answers_is_retried_with_the_backoff() -> None:
    port = free_port()  # nobody listens
    settings = MqttSettings(host="127.0.0.1", port=port)

    async def main() -> None:
        t = Transport(settings, "t-nobody", backoff=Backoff(0.02, 0.1), name="test.mqtt")
        t.start(asyncio.get_running_loop())
        assert await until(lambda: t.losses >= 5)
        assert t.state is State.RETRYING and "unreachable" in t.last_error
        assert t.backoff.ceiling() == 0.1
        await asyncio.to_thread(t.stop)

    asyncio.run(main())


def test_backpressure_holds_paho_back_and_loses_nothing(mosquitto: Mosquitto, topic_prefix: str) -> None:
    settings = mosquitto.settings()
    n = 600

    async def main() -> None:
        t = Transport(settings, f"t-bp-{topic_prefix}", subscriptions=[(f"{topic_prefix}/#", 1)],
                      max_inbox=50, name="test.mqtt")
        woken = asyncio.Event()
        t.on_wake = woken.set  # the owner drains the inbox itself (as the collector does)
        t.start(asyncio.get_running_loop())
        assert await until(t.subscribed.is_set)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(settings.host, settings.port)
        pub.loop_start()
        try:
            for i in range(n):
                pub.publish(f"{topic_prefix}/x", str(i).encode(), qos=1)
            assert await until(lambda: t.waiting)  # the owner takes nothing: paho waits
            assert len(t.inbox) <= 50
            seen: list[int] = []
            while len(seen) < n:
                await asyncio.wait_for(woken.wait(), 30)
                woken.clear()
                while t.inbox:
                    seen.append(int(t.inbox.popleft().payload))
                t.taken()
            assert seen == list(range(n))
        finally:
            pub.disconnect()
            pub.loop_stop()
            await asyncio.to_thread(t.stop)

    asyncio.run(main())


def test_refused_publishes_are_counted_and_none(tmp_path: Path) -> None:
    settings = MqttSettings(host="127.0.0.1", port=free_port())

    async def main() -> None:
        t = Transport(settings, "t-refused", max_queued=2, backoff=Backoff(0.5, 1.0), name="test.mqtt")
        t.start(asyncio.get_running_loop())
        # offline: QoS 1 is kept for the next connection (up to max_queued), QoS 0 is not
        assert t.publish("t/a", b"1") is not None
        assert t.publish("t/a", b"2") is not None
        assert t.publish("t/a", b"3") is None
        assert t.publish("t/a", b"4", qos=0) is None
        assert t.refused == 2 and t.outstanding == 2
        await asyncio.to_thread(t.stop)

    asyncio.run(main())


def test_a_failing_handler_is_counted_and_the_others_are_handled(mosquitto: Mosquitto,
                                                                 topic_prefix: str) -> None:
    settings = mosquitto.settings()
    got: list[bytes] = []

    def handler(m: Inbound) -> None:
        if m.payload == b"bad":
            raise RuntimeError("boom")
        got.append(m.payload)

    async def main() -> None:
        t = Transport(settings, f"t-h-{topic_prefix}", subscriptions=[(f"{topic_prefix}/#", 1)],
                      name="test.mqtt")
        t.on_message = handler
        acked: list[int] = []
        t.on_pubacks = acked.extend
        t.start(asyncio.get_running_loop())
        assert await until(t.subscribed.is_set)
        mids = [t.publish(f"{topic_prefix}/x", p) for p in (b"a", b"bad", b"c")]
        assert await until(lambda: got == [b"a", b"c"])
        assert t.handler_errors == 1
        assert await until(lambda: sorted(acked) == sorted(m for m in mids if m is not None))
        assert t.outstanding == 0
        await asyncio.to_thread(t.stop)

    asyncio.run(main())


def test_nothing_posted_runs_after_the_stop(mosquitto: Mosquitto, topic_prefix: str) -> None:
    """A message paho's thread handed over just before the stop, which reaches the loop after
    it, is not handled: the owner closes its state right after the stop."""
    settings = mosquitto.settings()
    handled: list[str] = []

    class Msg:  # as paho's MQTTMessage
        topic, payload, mid, qos, retain = f"{topic_prefix}/x", b"late", 1, 1, False

    async def main() -> None:
        t = Transport(settings, f"t-s-{topic_prefix}", subscriptions=[(f"{topic_prefix}/#", 1)],
                      name="test.mqtt")
        t.on_message = lambda m: handled.append(m.topic)
        t.start(asyncio.get_running_loop())
        assert await until(t.subscribed.is_set)
        t._on_message(None, None, Msg())  # paho's thread posts it (the loop has not run it yet)...
        await asyncio.to_thread(t.stop)  # ...the stop comes first
        await asyncio.sleep(0)  # the loop runs what was posted
        await asyncio.sleep(0)
        assert t.inbox and handled == []  # not handled after the stop; kept for the next start
        t.start(asyncio.get_running_loop())  # open again: a message handed over now is handled
        t._on_message(None, None, Msg())
        assert await until(lambda: handled != [])
        await asyncio.to_thread(t.stop)

    asyncio.run(main())
    assert handled == [f"{topic_prefix}/x", f"{topic_prefix}/x"]  # the kept one, then the new one
