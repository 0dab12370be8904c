"""A processing round is all or nothing: its transitions, the alarms and the messages to
publish are committed in one SQLite transaction, published from that outbox, and a round that
fails is rolled back. The engine as a process against a real Mosquitto."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import Recorder
from aquavolt.wire import AlarmEvent, Topics, decode

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


def _unpublished(db: Path) -> list[tuple[object, ...]]:
    """The outbox: stored, not yet acknowledged by the broker (an engine without one has nothing waiting)."""
    try:
        return _stored(db, "SELECT id FROM outbox")
    except sqlite3.OperationalError as exc:
        assert "no such table" in str(exc)
        return []


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
            _until(lambda: not _unpublished(db))  # acknowledged: out of the outbox

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


def test_a_rule_that_raises_midway_rolls_the_whole_round_back(tmp_path: Path) -> None:
    """In process, no broker needed (nothing is published before the commit): a rule raises on
    a marked reading after the round already raised an alarm and moved the rules' state. The
    raising rule is a test-only hook: the tank's limit rule wrapped by this test."""
    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings
    from aquavolt.wire import Batch, Reading, encode

    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text() + RULES)
    engine = Engine(load_field(field), MqttSettings(), tmp_path / "state", ManualClock(TS / 1000 + 60))
    t = engine.topics
    i = next(k for k, r in enumerate(engine.core.rules) if getattr(r, "name", "") == "limit:tank-1.level_m")
    rule, step = engine.core.rules[i], engine.core.rules[i].step

    def marked(state: object, s: object) -> object:  # the hook: 99 m is the marked reading
        if getattr(s, "value", None) == 99.0:
            raise RuntimeError("marked reading")
        return step(state, s)

    rule.step = marked

    class Msg:  # as paho's MQTTMessage, handed to the transport as paho's thread does
        mid, qos, retain = 0, 1, False

        def __init__(self, topic: str, payload: bytes) -> None:
            self.topic, self.payload = topic, payload

    def round_of(*batches: Batch) -> None:
        for b in batches:
            engine.transport._on_message(None, None, Msg(t.data("gw-1", b.device), encode(b)))  # type: ignore[arg-type]
        engine.process_pending()

    def tank(seq: int, *values: float) -> Batch:
        return Batch(gateway="gw-1", device="tank-1", seq=seq, readings=[
            Reading(point="level_m", value=v, ts_ms=TS + 1000 * seq + k) for k, v in enumerate(values)])

    pump = Batch(gateway="gw-1", device="pump-1", seq=1, readings=[Reading(point="fault", value=True, ts_ms=TS)])
    try:
        round_of(pump)
        before = (pickle.dumps(engine.core.states), engine.core.manager.snapshot())
        round_of(tank(2, 5.5), tank(3, 5.6, 99.0))  # the alarm raised, then the marked reading
        assert engine.stats.failed_rounds == 1 and "marked reading" in engine.stats.last_round_error
        assert engine.stats.round_dead_letters == 2 and engine.stats.health == "degraded"
        assert (pickle.dumps(engine.core.states), engine.core.manager.snapshot()) == before
        assert set(engine.core.manager.alarms) == {"pump-1/fault"} and engine.core.manager.seq == 1
        assert [e["alarm_id"] for e in engine.store.events()] == ["pump-1/fault"]
        assert len(engine._outbox) == 2  # the pump's event only (retained and stream)

        # the gateway sends the rolled-back batch again (historical, after the collector's
        # stored mark): it was not applied, so it is not a duplicate to skip
        again = tank(2, 5.5).model_copy(update={"historical": True})
        round_of(again)  # the rule raises the alarm again, as if never seen
        assert engine.stats.resent_skipped == 0
        assert [(e["alarm_id"], e["details"]["seq"]) for e in engine.store.events()] == [
            ("tank-1/level_m_high", 2), ("pump-1/fault", 1)]
        assert engine.stats.failed_rounds == 1
        round_of(again)  # applied once: now a duplicate
        assert engine.stats.resent_skipped == 1
    finally:
        engine.transport.stop()
        engine.store.close()
        engine.commands.close()


def test_an_operator_action_that_cannot_be_stored_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    """An acknowledgement whose commit fails (the disk, here a store that raises: the test's
    seam) leaves the alarm unacknowledged in memory too, writes no audit row, is counted and
    answered as not stored; the same acknowledgement once the store works is stored with its
    audit row."""
    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine, NotStored
    from aquavolt.settings import MqttSettings
    from aquavolt.wire import Batch, Reading, encode

    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text() + RULES)
    engine = Engine(load_field(field), MqttSettings(), tmp_path / "state", ManualClock(TS / 1000 + 60))

    class Msg:  # as paho's MQTTMessage, handed to the transport as paho's thread does
        mid, qos, retain = 0, 1, False

        def __init__(self, topic: str, payload: bytes) -> None:
            self.topic, self.payload = topic, payload

    pump = Batch(gateway="gw-1", device="pump-1", seq=1, readings=[Reading(point="fault", value=True, ts_ms=TS)])
    m = engine.core.manager
    try:
        engine.transport._on_message(None, None, Msg(engine.topics.data("gw-1", "pump-1"), encode(pump)))  # type: ignore[arg-type]
        engine.process_pending()
        assert str(m.alarms["pump-1/fault"].state) == "unack"
        before = m.snapshot()

        def ack() -> tuple[list[AlarmEvent], dict[str, object]]:
            events, skipped = m.acknowledge(["pump-1/fault"], m.seq, "amina", engine.clock.now_ms(), "")
            return events, {"acknowledged": [e.alarm_id for e in events], "skipped": skipped}

        real_save = engine.store.save

        def full_disk(*args: object, **kw: object) -> list[int]:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(engine.store, "save", full_disk)
        with pytest.raises(NotStored, match="acknowledge on pump-1/fault was not stored"):
            engine.operator_action("amina", "acknowledge", "pump-1/fault", {}, ack)
        assert m.snapshot() == before and str(m.alarms["pump-1/fault"].state) == "unack"
        assert engine.store.actions() == [] and engine.stats.failed_actions == 1
        assert engine.stats.health == "degraded"

        monkeypatch.setattr(engine.store, "save", real_save)
        events, result = engine.operator_action("amina", "acknowledge", "pump-1/fault", {}, ack)
        assert result["acknowledged"] == ["pump-1/fault"] and str(m.alarms["pump-1/fault"].state) == "acked"
        assert [a["action"] for a in engine.store.actions()] == ["acknowledge"]
        assert engine.store.events(alarm_id="pump-1/fault")[0]["transition"] == events[0].transition
    finally:
        engine.transport.stop()
        engine.store.close()
        engine.commands.close()
