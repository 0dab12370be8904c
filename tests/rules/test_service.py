"""The engine as a separate process against a real Mosquitto: alarms published retained and
on the event stream, the operator API (ack shows on MQTT, every action with its operator),
and the alarm state surviving a restart."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.mqtt import Recorder, make_client
from aquavolt.wire import AlarmEvent, Batch, DeviceStatus, Reading, Topics, decode, encode

CASES = Path(__file__).parent / "cases"
TOKENS = {"amina": "amina-token-0123456789", "omar": "omar-token-0123456789"}
FIELD_RULES = """
rules:
  discrete:
  - {profile: av_pump1, point: fault, priority: high, message: Pump tripped}
  limits:
  - {device: tank-1, point: level_m, high: 5.0, deadband: 0.3, priority: medium}
  stale: {intervals: 100000}
  comm_fail: {on_delay_s: 0}
"""


class RulesProcess:
    def __init__(self, tmp: Path, url: str, field: Path) -> None:
        self.tmp, self.url, self.field = tmp, url, field
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # the file keeps digests only ('aquavolt rules token add' writes it)
        (tmp / "tokens.yaml").write_text("".join(
            f"{k}: {{role: operator, sha256: {hashlib.sha256(v.encode()).hexdigest()}}}\n"
            for k, v in TOKENS.items()))

    def start(self) -> None:
        log = open(self.tmp / "rules.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(self.field), "--state-dir",
             str(self.tmp / "state"), "--mqtt", self.url, "--api-port", str(self.port),
             "--tokens", str(self.tmp / "tokens.yaml"), "--tick-ms", "0"],
            stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.get("/health", token=None)["mqtt_connected"]:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise AssertionError("rules engine did not start:\n" + (self.tmp / "rules.log").read_text()[-3000:])

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(15) == 0, (self.tmp / "rules.log").read_text()[-3000:]

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKENS["amina"]) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, **json.loads(exc.read())}

    def get(self, path: str, token: str | None = TOKENS["amina"]) -> Any:
        return self.call("GET", path, token=token)


@pytest.fixture
def engine(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> Any:
    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text() + FIELD_RULES)
    p = RulesProcess(tmp_path, f"{mosquitto.url()}?prefix={topic_prefix}", field)
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.stop()


def _publisher(mosquitto: Mosquitto) -> mqtt.Client:
    c = make_client(mosquitto.settings(), f"pub-{time.monotonic_ns()}")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    return c


def _batch(device: str, point: str, value: Any, ts: int, seq: int) -> bytes:
    return encode(Batch(gateway="gw-1", device=device, seq=seq, readings=[Reading(point=point, value=value,
                                                                                  ts_ms=ts)]))


def _events(rec: Recorder, topic: str) -> list[AlarmEvent]:
    return [decode(m.payload, AlarmEvent) for m in rec.snapshot() if m.topic == topic]


def test_alarm_ack_shelve_and_restart(engine: RulesProcess, mosquitto: Mosquitto, topic_prefix: str) -> None:
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, t.all_alarms], "rec-1") as rec:
            ts = 1_764_000_000_000
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", True, ts, 1), qos=1)
            pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 5.5, ts + 1000, 2), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 2, 10)
            raised = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition, str(e.state), e.ts_ms) for e in raised] == [
                ("pump-1/fault", "raised", "unack", ts), ("tank-1/level_m_high", "raised", "unack", ts + 1000)]
            assert raised[0].message == "Pump tripped" and raised[0].priority == "high"

            # no token, unknown token: refused
            assert engine.call("GET", "/alarms", token=None)["status"] == 401
            assert engine.call("GET", "/alarms", token="x" * 20)["status"] == 401
            listing = engine.get("/alarms")
            assert {a["alarm_id"] for a in listing["alarms"]} == {"pump-1/fault", "tank-1/level_m_high"}
            seen = listing["seq"]
            assert engine.get("/alarms?priority=high")["alarms"][0]["alarm_id"] == "pump-1/fault"

            # the pump trips again after the operator looked: that alarm is not acknowledged blindly
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", False, ts + 2000, 3), qos=1)
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", True, ts + 3000, 4), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 4, 10)
            res = engine.call("POST", "/ack", {"seen_seq": seen, "comment": "seen on screen"})
            assert res["acknowledged"] == ["tank-1/level_m_high"]
            assert "pump-1/fault" in res["skipped"]
            assert rec.wait_for(lambda _m: any(e.transition == "acknowledged"
                                               for e in _events(rec, t.alarm_events)), 10)
            ack = next(e for e in _events(rec, t.alarm_events) if e.transition == "acknowledged")
            assert (ack.alarm_id, str(ack.state), ack.by) == ("tank-1/level_m_high", "acked", "amina")

            # shelve needs a reason; with one it shelves, by omar
            omar = TOKENS["omar"]
            assert engine.call("POST", "/alarms/pump-1/fault/shelve", {"duration_s": 600}, token=omar)["status"] == 409
            res = engine.call("POST", "/alarms/pump-1/fault/shelve", {"duration_s": 600, "reason": "crew on site"},
                              token=omar)
            assert res["events"][0]["state"] == "shelved"
            engine.call("POST", "/alarms/pump-1/fault/comment", {"text": "bearing noise"}, token=omar)
            retained_topic = t.alarm("pump-1", "fault")
            assert rec.wait_for(lambda _m: any(e.transition == "commented" for e in _events(rec, retained_topic)), 10)

            acts = engine.get("/actions")["actions"]
            assert [(a["operator"], a["action"]) for a in acts][:3] == [
                ("omar", "comment"), ("omar", "shelve"), ("amina", "acknowledge")]
            perf = engine.get(f"/performance?since_ms=0&until_ms={ts + 10_000}")
            assert perf["alarms"] == 3 and perf["top_bad_actors"][0] == {"alarm_id": "pump-1/fault",
                                                                          "activations": 2}
            spec = engine.call("GET", "/openapi.json", token=None)
            assert spec["openapi"].startswith("3.") and "/ack" in spec["paths"]

        # restart: the state comes back from SQLite
        engine.stop()
        engine.start()
        listing = engine.get("/alarms")
        states = {a["alarm_id"]: a["state"] for a in listing["alarms"]}
        assert states == {"pump-1/fault": "shelved", "tank-1/level_m_high": "acked"}
        assert listing["seq"] >= 7
        with Recorder(mosquitto.settings(), [t.alarm_events], "rec-2") as rec:
            # still active after restart: no duplicate raise; clearing continues the same alarm
            pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 5.6, ts + 20_000, 5), qos=1)
            pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 4.0, ts + 30_000, 6), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 1, 10)
            time.sleep(0.3)
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition, str(e.state)) for e in evs] == [
                ("tank-1/level_m_high", "cleared", "normal")]
            assert evs[0].details["seq"] > listing["seq"]
        hist = engine.get("/events?alarm_id=tank-1/level_m_high")["events"]
        assert [e["transition"] for e in hist] == ["cleared", "acknowledged", "raised"]
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_comm_fail_and_bad_payload(engine: RulesProcess, mosquitto: Mosquitto, topic_prefix: str) -> None:
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, t.deadletter("rules")], "rec-3") as rec:
            st = DeviceStatus(gateway="gw-1", device="em-1", state="comm_fail", ts_ms=1_764_000_000_000)
            pub.publish(t.device_status("gw-1", "em-1"), encode(st), qos=1, retain=True)
            pub.publish(t.data("gw-1", "em-1"), b'{"v": 1, "gateway": "gw-1"}', qos=1)
            assert rec.wait_for(lambda m: len(m) >= 2, 10)
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition) for e in evs] == [("em-1/comm_fail", "raised")]
            dead = [m for m in rec.snapshot() if m.topic == t.deadletter("rules")]
            assert dead and "Batch" in json.loads(dead[0].payload)["reason"]
            health = engine.get("/health")
            assert health["rejected"] == 1 and health["backlog_messages"] == 0
            # a real-time clock, readings from the past: the idle engine flushed its buffer
            assert health["horizon_ms"] == st.ts_ms and health["buffered_messages"] == 0
            assert health["late_messages"] == 0
        pub.publish(t.device_status("gw-1", "em-1"), b"", qos=1, retain=True)
    finally:
        pub.disconnect()
        pub.loop_stop()
