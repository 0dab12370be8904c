"""The engine stops promptly on SIGTERM while readings keep arriving: the launcher gives each
component a few seconds before killing it. Real Mosquitto, the engine as a process."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from aquavolt.mqtt import make_client
from aquavolt.services import Mosquitto
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
