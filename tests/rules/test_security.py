"""Time that cannot be forged and sources authenticated by topic: the engine as a process
against a real Mosquitto, on a real-time clock.

- A message stamped far in the future (``ts_ms = 2**53``) from a gateway's own topic once hung
  the engine for good (``/health`` silent, SIGTERM ignored), saved the jump in
  ``alarms.sqlite`` and made every other gateway stale. It is now dead-lettered and counted.
- A gateway could raise another gateway's alarm by naming it in the payload. A message about a
  device is now accepted only on the topic of the gateway the field file puts it on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import Inbound, Recorder
from aquavolt.wire import (
    AlarmEvent,
    Batch,
    BufferHealth,
    DeviceStatus,
    GatewayStatus,
    Health,
    Reading,
    Topics,
    decode,
    encode,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_service import CASES, RulesProcess, _publisher  # the engine-process helpers

GW2 = """- id: gw-2
  site: s1
  poll_intervals_s: {default: 10.0}
  buses:
  - {kind: modbus_tcp, id: plc2, host: 127.0.0.1, port: 15021}
  devices:
  - {id: em-9, profile: av_em1, bus: plc2, unit_id: 1}
"""
RULES = """
rules:
  event_time: {allowed_lateness_s: 0}   # max_future_s: 300 by default
  discrete:
  - {profile: av_pump1, point: fault, priority: high, message: Pump tripped}
  limits:
  - {device: tank-1, point: level_m, high: 5.0, deadband: 0.3, priority: medium}
  stale: {intervals: 100000, gateway_after_s: 300}
"""
FORGED = 2**53 - 1  # the largest timestamp the wire contract lets through


def _field(tmp: Path) -> Path:
    text = (CASES / "field.yaml").read_text().replace("water:\n", GW2 + "water:\n", 1)
    path = tmp / "field.yaml"
    path.write_text(text + RULES)
    return path


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's side of the notify protocol: a datagram socket as ``$NOTIFY_SOCKET``, a
    watchdog of 1 s (the engine pings at each housekeeping, every 0.5 s)."""
    with tempfile.TemporaryDirectory(prefix="sd-") as d:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(f"{d}/notify")
        sock.settimeout(0.1)
        monkeypatch.setenv("NOTIFY_SOCKET", f"{d}/notify")
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        yield sock
        sock.close()


def _notices(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            return out


@pytest.fixture
def engine(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str, systemd: socket.socket) -> Any:
    p = RulesProcess(tmp_path, f"{mosquitto.url()}?prefix={topic_prefix}", _field(tmp_path))
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:  # a hung engine ignores SIGTERM
        p.proc.terminate()
        try:
            p.proc.wait(5)
        except Exception:
            p.proc.kill()
            p.proc.wait(5)


def _health(gw: str, ts: int) -> bytes:
    return encode(Health(gateway=gw, ts_ms=ts, uptime_s=1.0,
                         buffer=BufferHealth(depth=0, bytes=0, oldest_age_s=0.0, dropped=0)))


def _batch(gw: str, device: str, point: str, value: Any, ts: int, seq: int) -> bytes:
    return encode(Batch(gateway=gw, device=device, seq=seq,
                        readings=[Reading(point=point, value=value, ts_ms=ts)]))


def _events(rec: Recorder, topic: str) -> list[AlarmEvent]:
    return [decode(m.payload, AlarmEvent) for m in rec.snapshot() if m.topic == topic]


def _dead(rec: Recorder, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in rec.snapshot() if m.topic == topic]


def _health_now(engine: RulesProcess) -> dict[str, Any]:
    return engine.call("GET", "/health", token=None)


def test_a_forged_future_timestamp_is_rejected_and_freezes_nothing(
        engine: RulesProcess, mosquitto: Mosquitto, topic_prefix: str, tmp_path: Path,
        systemd: socket.socket) -> None:
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    dl = t.deadletter("rules")
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, dl], "rec-sec-1") as rec:
            now = int(time.time() * 1000)
            pub.publish(t.health("gw-2"), _health("gw-2", now), qos=1)
            # the forged messages, each from the gateway's own topic
            pub.publish(t.health("gw-1"), _health("gw-1", FORGED), qos=1)
            pub.publish(t.data("gw-1", "tank-1"), _batch("gw-1", "tank-1", "level_m", 1.0, FORGED, 1), qos=1)
            assert rec.wait_for(lambda _m: len(_dead(rec, dl)) >= 2, 10), rec.snapshot()
            dead = _dead(rec, dl)
            assert all("future" in d["reason"] and "gw-1" in d["reason"] for d in dead), dead
            assert "tank-1" in dead[1]["reason"]
            h = _health_now(engine)  # the loop answers, and is not stuck on the forged time
            assert h.get("status", 200) == 200 and not h["stuck"], h
            assert h["rejected_future"] == 2 and h["rejected"] == 2
            assert h["watermark_ms"] == now
            # the loop goes on: systemd's watchdog keeps being pinged
            _notices(systemd)
            deadline = time.monotonic() + 30  # bounds a failure only: pings come every few seconds
            while "WATCHDOG=1" not in _notices(systemd):
                assert time.monotonic() < deadline, "no systemd watchdog ping after the forged messages"

            # fresh data is processed normally, and nobody is made stale by the forged jump
            pub.publish(t.data("gw-1", "tank-1"), _batch("gw-1", "tank-1", "level_m", 5.5, now + 1000, 2),
                        qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 1, 10)
            pub.publish(t.health("gw-2"), _health("gw-2", now + 2000), qos=1)
            assert rec.wait_for(lambda _m: engine.get("/health", token=None)["watermark_ms"] == now + 2000, 10)
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition) for e in evs] == [("tank-1/level_m_high", "raised")]
            h = _health_now(engine)
            assert not h["stuck"] and h["horizon_ms"] == now + 2000
        engine.stop()  # SIGTERM is obeyed
        db = sqlite3.connect(tmp_path / "state" / "alarms.sqlite")
        stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
        db.close()
        assert stored["watermark"] <= now + 2000  # nothing jumped in alarms.sqlite
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_a_gateway_cannot_raise_another_gateway_s_alarm(
        engine: RulesProcess, mosquitto: Mosquitto, topic_prefix: str) -> None:
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    dl = t.deadletter("rules")
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, dl], "rec-sec-2") as rec:
            now = int(time.time() * 1000)
            forged = [
                # gw-2's topic, gw-1's device named in the payload
                (t.data("gw-2", "em-9"), _batch("gw-1", "pump-1", "fault", True, now, 1)),
                # gw-2's topic and payload, a device the field puts on gw-1
                (t.data("gw-2", "pump-1"), _batch("gw-2", "pump-1", "fault", True, now, 2)),
                # gw-1's topic, gw-2 named in the payload
                (t.data("gw-1", "pump-1"), _batch("gw-2", "pump-1", "fault", True, now, 3)),
                (t.device_status("gw-2", "pump-1"),
                 encode(DeviceStatus(gateway="gw-2", device="pump-1", state="comm_fail", ts_ms=now))),
                (t.gateway_status("gw-2"),
                 encode(GatewayStatus(gateway="gw-1", state="offline", ts_ms=now, bd_seq=9))),
                (t.health("gw-2"), _health("gw-1", now)),
                (t.data("gw-3", "pump-1"), _batch("gw-3", "pump-1", "fault", True, now, 4)),
            ]
            for topic, payload in forged:
                pub.publish(topic, payload, qos=1)
            assert rec.wait_for(lambda _m: len(_dead(rec, dl)) >= len(forged), 10), rec.snapshot()
            dead = _dead(rec, dl)
            assert [d["topic"] for d in dead] == [topic for topic, _ in forged]
            assert all("gw-" in d["reason"] for d in dead), dead
            # the genuine message is accepted
            pub.publish(t.data("gw-1", "pump-1"), _batch("gw-1", "pump-1", "fault", True, now + 1000, 5), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 1, 10)
            time.sleep(0.2)  # nothing else may follow
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition, e.ts_ms) for e in evs] == [("pump-1/fault", "raised", now + 1000)]
            h = engine.get("/health", token=None)
            assert h["rejected_source"] == len(forged) and h["rejected"] == len(forged)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_health_answers_503_when_processing_makes_no_progress(
        tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> None:
    """Supervision of the process (wall time, not a rule): messages waiting and no processing
    round for ``stuck_after_s`` make ``/health`` fail with the reason; a round clears it."""
    import aiohttp

    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.harness.servers import free_port
    from aquavolt.rules.http import serve
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings

    settings = MqttSettings.from_env(f"{mosquitto.url()}?prefix={topic_prefix}")
    eng = Engine(load_field(_field(tmp_path)), settings, tmp_path / "state", ManualClock(1_764_000_000))
    t = Topics(topic_prefix)
    port = free_port()

    async def main() -> list[tuple[int, str]]:
        runner = await serve(eng, {}, "127.0.0.1", port)
        seen = []
        try:
            async with aiohttp.ClientSession() as http:
                async def health() -> None:
                    async with http.get(f"http://127.0.0.1:{port}/health") as r:
                        seen.append((r.status, (await r.json())["stuck"]))
                await health()  # idle: healthy
                eng._inbox.append(Inbound(t.health("gw-1"), _health("gw-1", 1_764_000_000_000), 0, 1, False, 0))
                eng.stuck_after_s = 60.0
                await health()  # work just arrived (and however slow this machine, not 60 s ago)
                eng._progress_at -= 61.0  # the last round was 61 s ago (no sleep: the wall clock moved)
                eng.transport.inbox_since -= 61.0  # and the message arrived then
                await health()  # no round for longer than stuck_after_s: stuck
                eng.process_pending()
                await health()
        finally:
            await runner.cleanup()
            eng.store.close()
        return seen

    seen = asyncio.run(main())
    assert [code for code, _ in seen] == [200, 200, 503, 200], seen
    assert "no round" in seen[2][1] and "1 message" in seen[2][1]


def test_a_loop_that_never_returns_still_obeys_a_stop(tmp_path: Path) -> None:
    """The watchdog thread ends a process whose loop is blocked in a round after a stop was
    requested (SIGTERM was once ignored for good), with every thread's stack on stderr."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    script = (f"import sys; sys.path.insert(0, {str(root)!r})\n"
              "from aquavolt.rules.service import Watchdog\n"
              "w = Watchdog(stuck_after_s=0.2, stop_hard_s=0.5)\n"
              "w.start()\n"
              "w.request_stop()\n"
              "def a_round_that_never_returns():\n"
              "    while True:\n"
              "        pass\n"
              "a_round_that_never_returns()\n")
    # the loop never returns: only the watchdog can end it (status 70); the timeout only bounds
    # a failure, whatever the machine's load
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 70, done.stderr
    assert "a_round_that_never_returns" in done.stderr and "exiting" in done.stderr


def test_on_a_simulated_clock_a_message_ahead_waits_for_the_clock_then_is_judged(
        tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> None:
    """In lockstep the engine follows the grants on its own connection: readings of a new
    instant may reach it before the grant does. Beyond the window they wait for the clock
    (``early_grace_s`` of wall time), and are rejected only if it does not come."""
    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings

    settings = MqttSettings.from_env(f"{mosquitto.url()}?prefix={topic_prefix}")
    t0 = 1_764_000_000
    clock = ManualClock(t0)
    eng = Engine(load_field(_field(tmp_path)), settings, tmp_path / "state", clock)
    t = Topics(topic_prefix)
    try:
        ahead = (t0 + 400) * 1000  # beyond the 300 s window of the clock's instant
        eng._inbox.append(Inbound(t.health("gw-1"), _health("gw-1", ahead), 0, 1, False, 0))
        eng.process_pending()
        assert eng.stats.waiting_for_clock == 1 and eng.core.max_seen_ms == 0
        clock.advance(200)  # the grant arrives
        eng.process_pending()
        assert eng.stats.waiting_for_clock == 0 and eng.core.max_seen_ms == ahead
        assert eng.stats.rejected == 0

        eng.early_grace_s = 0.1  # a forged one: the clock never comes
        eng._inbox.append(Inbound(t.health("gw-2"), _health("gw-2", FORGED), 0, 1, False, 0))
        eng.process_pending()
        assert eng.stats.waiting_for_clock == 1
        deadline = time.monotonic() + 5
        while eng.stats.rejected_future == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            eng.process_pending()
        assert eng.stats.waiting_for_clock == 0 and eng.core.max_seen_ms == ahead
    finally:
        eng.store.close()


def test_a_grant_that_lands_during_a_round_does_not_reorder_a_gateways_messages(
        tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> None:
    """A follower's grants move its clock from paho's thread, in the middle of a processing
    round. A message judged ahead of the window waits for the clock; one behind it in the same
    round must not be judged against a newer instant and go first: the waiting one would then
    come late, after ticks that took the gateway for silent (a false ``stale`` in the meter
    line's loaded clean week, raised at 09:40 with health every minute from 09:36 waiting)."""
    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings

    class GrantMidRound(ManualClock):
        """Moves to ``then`` after ``reads`` readings of its time: a grant landing mid-round."""

        def __init__(self, start: float, reads: int, then: float) -> None:
            super().__init__(start)
            self.reads, self.then = reads, then

        def now_ms(self) -> int:
            self.reads -= 1
            if self.reads < 0:
                self.t = max(self.t, self.then)
            return super().now_ms()

    settings = MqttSettings.from_env(f"{mosquitto.url()}?prefix={topic_prefix}")
    t0 = 1_764_000_000
    t = Topics(topic_prefix)
    for reads in range(4):  # wherever among the rounds the grant lands
        clock = GrantMidRound(t0, reads, t0 + 450)
        eng = Engine(load_field(_field(tmp_path)), settings, tmp_path / f"state-{reads}", clock)
        try:
            stamps = [(t0 + s) * 1000 for s in (400, 460, 520, 580, 700)]  # a health a minute
            for ts in stamps:
                eng._inbox.append(Inbound(t.health("gw-1"), _health("gw-1", ts), 0, 1, False, 0))
            for _ in range(8):  # the clock has moved after at most 4 rounds
                eng.process_pending()
            assert eng.stats.waiting_for_clock == 0 and eng.stats.rejected == 0
            assert eng.core.max_seen_ms == stamps[-1]
            assert eng.core.late_messages == 0, f"grant after {reads} reading(s) of the clock"
        finally:
            eng.store.close()
