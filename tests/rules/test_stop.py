"""The engine stops promptly on SIGTERM while readings keep arriving: the launcher gives each
component a few seconds before killing it. Real Mosquitto, the engine as a process."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import make_client
from aquavolt.wire import Batch, Reading, Topics, encode

sys.path.insert(0, str(Path(__file__).parent))
from test_service import RulesProcess  # the engine-process helper of the service tests

CASES = Path(__file__).parent / "cases"
RULES = """
rules:
  limits:
  - {device: tank-1, point: level_m, high: 5.0, deadband: 0.3, priority: medium}
  stale: {intervals: 3}
"""


def test_sigterm_under_load_stops_within_about_two_seconds(tmp_path: Path, mosquitto: Mosquitto,
                                                     topic_prefix: str) -> None:
    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text() + RULES)
    engine = RulesProcess(tmp_path, f"{mosquitto.url()}?prefix={topic_prefix}", field)
    engine.start()
    topics = Topics(topic_prefix)
    pub = make_client(mosquitto.settings(), f"flood-{time.monotonic_ns()}")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    done = threading.Event()

    def flood() -> None:  # bounded: at most 20 s of 100-reading batches, as fast as paho takes them
        seq, t0 = 0, time.monotonic()
        while not done.is_set() and time.monotonic() - t0 < 20:
            seq += 1
            b = Batch(gateway="gw-1", device="tank-1", seq=seq, readings=[
                Reading(point="level_m", value=2.0 + (seq % 50) / 100, ts_ms=seq * 1000 + k) for k in range(100)])
            pub.publish(topics.data("gw-1", "tank-1"), encode(b), qos=0)
            if seq % 200 == 0:
                time.sleep(0.01)

    th = threading.Thread(target=flood)
    th.start()
    try:
        time.sleep(3.0)
        assert engine.proc is not None
        t0 = time.monotonic()
        engine.proc.terminate()
        rc = engine.proc.wait(15)
        took = time.monotonic() - t0
    finally:
        done.set()
        th.join()
        if engine.proc is not None and engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(5)
        pub.disconnect()
        pub.loop_stop()
    assert rc == 0, (tmp_path / "rules.log").read_text()[-3000:]
    assert took < 2.5, f"stopped in {took:.1f} s"  # about 2 s, with room for a loaded 2-core machine



def test_messages_from_paho_s_thread_never_wait_for_a_lost_wake_up(tmp_path) -> None:
    """The engine once stopped processing for good under load (its backlog grew while the
    loop slept): paho's thread looked at the inbox ("not empty: no wake-up needed"), the loop
    then drained it and went to sleep, and the message was appended to an inbox nobody would
    look at again. Reading a paho message's topic decodes it, so the thread may switch right
    there; this test makes it switch every time, and every message must still be handled."""
    import asyncio

    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings

    n = 20_000
    root = Path(__file__).resolve().parents[2]
    engine = Engine(load_field(root / "examples/demo-town.yaml"), MqttSettings(), tmp_path / "r",
                    ManualClock(1_780_000_000))
    topic = engine.topics.health("gw-pumping")

    class Msg:  # as paho's MQTTMessage, handed to the transport as paho's thread does
        payload = b"{}"
        mid, qos, retain = 0, 1, False

        @property
        def topic(self) -> str:
            time.sleep(0)  # as paho's MQTTMessage.topic: work, and a chance for the loop to run
            return topic

    def producer() -> None:
        for _ in range(n):
            engine.transport._on_message(None, None, Msg())  # type: ignore[arg-type]

    async def main() -> None:
        engine._loop = asyncio.get_running_loop()
        engine.transport.attach(engine._loop)
        task = asyncio.create_task(engine._process())
        thread = threading.Thread(target=producer)
        thread.start()
        deadline = time.monotonic() + 20
        while (thread.is_alive() or engine._inbox) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # watching another thread's progress: no event to wait on
        thread.join()
        task.cancel()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        asyncio.run(main())
    finally:
        sys.setswitchinterval(old)
        engine.transport.stop()
    assert engine.stats.messages == n and not engine._inbox, (engine.stats.messages, len(engine._inbox))
