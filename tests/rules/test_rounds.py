"""A processing round is all or nothing: its transitions, the alarms and the messages to
publish are committed in one SQLite transaction, published from that outbox, and a round that
fails is rolled back. The engine as a process against a real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aquavolt.mqtt import Recorder
from aquavolt.wire import AlarmEvent, Topics, decode
from harness.servers import Mosquitto

sys.path.insert(0, str(Path(__file__).parent))
from test_service import CASES, FIELD_RULES, RulesProcess, _batch, _publisher  # the engine-process helpers

TS = 1_764_000_000_000
# no lateness: a reading is released to the rules in the round that received it
RULES = FIELD_RULES + "  event_time: {allowed_lateness_s: 0}\n"


def _engine(tmp_path: Path, mosquitto: Mosquitto, prefix: str) -> RulesProcess:
    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text() + RULES)
    return RulesProcess(tmp_path, f"{mosquitto.url()}?prefix={prefix}", field)


def _until(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Polls state held by another process (its SQLite file, its API): there is no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _stored(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def _events(rec: Recorder, topic: str) -> list[AlarmEvent]:
    return [decode(m.payload, AlarmEvent) for m in rec.snapshot() if m.topic == topic]


def test_a_failed_round_is_rolled_back_dead_lettered_and_shown(tmp_path: Path, mosquitto: Mosquitto,
                                                              topic_prefix: str) -> None:
    """The store refuses the round's commit (the database locked by another writer, a real
    SQLite fault): the alarm the round raised must not stay in memory unstored and unpublished."""
    t = Topics(topic_prefix)
    engine = _engine(tmp_path, mosquitto, topic_prefix)
    engine.start()
    db = tmp_path / "state" / "alarms.sqlite"
    pub = _publisher(mosquitto)
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, t.deadletter("rules")], "rec-rounds") as rec:
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", True, TS, 1), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) == 1, 10)
            _until(lambda: not _stored(db, "SELECT id FROM outbox"))  # acknowledged: out of the outbox

            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # every write of the engine now fails (after its busy timeout)
            try:
                pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 5.5, TS + 1000, 2), qos=1)
                _until(lambda: "locked" in engine.get("/health", token=None)["last_error"], 15)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            # memory, store and the published stream agree: the round left nothing behind
            assert {a["alarm_id"]: a["state"] for a in engine.get("/alarms")["alarms"]} == {"pump-1/fault": "unack"}
            assert engine.get("/alarms")["seq"] == 1
            assert _stored(db, "SELECT seq, alarm_id FROM events") == [(1, "pump-1/fault")]
            assert _stored(db, "SELECT alarm_id FROM alarms") == [("pump-1/fault",)]
            assert rec.wait_for(lambda m: any(x.topic == t.deadletter("rules") for x in m), 5)
            dead = [json.loads(m.payload) for m in rec.snapshot() if m.topic == t.deadletter("rules")]
            assert len(dead) == 1 and "processing round failed" in dead[0]["reason"]
            assert "locked" in dead[0]["reason"] and '"seq":2' in dead[0]["payload"].replace(" ", "")
            health = engine.get("/health", token=None)
            assert health["failed_rounds"] == 1 and health["health"] == "degraded"
            assert "locked" in health["last_round_error"] and health["round_dead_letters"] == 1
            assert [e.alarm_id for e in _events(rec, t.alarm_events)] == ["pump-1/fault"]

            # the next rounds go on normally: the same reading again raises the alarm, seq 2
            pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 5.5, TS + 2000, 3), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) == 2, 10)
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition, e.details["seq"]) for e in evs] == [
                ("pump-1/fault", "raised", 1), ("tank-1/level_m_high", "raised", 2)]
            assert _stored(db, "SELECT seq, alarm_id FROM events ORDER BY seq") == [
                (1, "pump-1/fault"), (2, "tank-1/level_m_high")]
            _until(lambda: not _stored(db, "SELECT id FROM outbox"))  # acknowledged: out of the outbox
            assert engine.get("/health", token=None)["failed_rounds"] == 1
    finally:
        pub.disconnect()
        pub.loop_stop()
        if engine.proc is not None and engine.proc.poll() is None:
            engine.stop()


def test_a_crash_between_store_and_publish_publishes_once_at_restart(
        tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL after the round was stored and before it was published (a test-only hook of the
    engine, AQUAVOLT_RULES_TEST_HOLD_PUBLISH, holds the outbox while its file exists): the
    restarted engine publishes the stored events, each event id (details.seq) once."""
    t = Topics(topic_prefix)
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv("AQUAVOLT_RULES_TEST_HOLD_PUBLISH", str(hold))
    engine = _engine(tmp_path, mosquitto, topic_prefix)
    engine.start()
    db = tmp_path / "state" / "alarms.sqlite"
    pub = _publisher(mosquitto)
    try:
        with Recorder(mosquitto.settings(), [t.alarm_events, t.all_alarms], "rec-crash") as rec:
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", True, TS, 1), qos=1)
            pub.publish(t.data("gw-1", "tank-1"), _batch("tank-1", "level_m", 5.5, TS + 1000, 2), qos=1)
            _until(lambda: len(_stored(db, "SELECT id FROM outbox")) == 4)  # 2 events, retained + stream
            assert engine.proc is not None
            os.kill(engine.proc.pid, signal.SIGKILL)
            engine.proc.wait(10)
            assert _events(rec, t.alarm_events) == []  # stored, never published
            assert [s for (s,) in _stored(db, "SELECT seq FROM events ORDER BY seq")] == [1, 2]

            hold.unlink()
            engine.start()
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 2, 10)
            _until(lambda: not _stored(db, "SELECT id FROM outbox"))
            # a later event proves nothing else was on its way before it (QoS 1, one publisher)
            pub.publish(t.data("gw-1", "pump-1"), _batch("pump-1", "fault", False, TS + 2000, 3), qos=1)
            assert rec.wait_for(lambda _m: len(_events(rec, t.alarm_events)) >= 3, 10)
            evs = _events(rec, t.alarm_events)
            assert [(e.alarm_id, e.transition, e.details["seq"]) for e in evs] == [
                ("pump-1/fault", "raised", 1), ("tank-1/level_m_high", "raised", 2),
                ("pump-1/fault", "cleared", 3)]
            retained = {m.topic: decode(m.payload, AlarmEvent).details["seq"] for m in rec.snapshot()
                        if m.topic != t.alarm_events}
            assert retained == {t.alarm("pump-1", "fault"): 3, t.alarm("tank-1", "level_m_high"): 2}
            _until(lambda: engine.get("/health", token=None)["outbox_pending"] == 0)
    finally:
        pub.disconnect()
        pub.loop_stop()
        if engine.proc is not None and engine.proc.poll() is None:
            engine.stop()
