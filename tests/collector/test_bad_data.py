"""Bad data is isolated: malformed payloads and points InfluxDB refuses (a field type
conflict) go to the dead letter (file and MQTT topic) with the reason, counted; everything
else is written; the collector goes on."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import Mosquitto
from aquavolt.influx import Influx
from aquavolt.mqtt import Recorder, make_client
from aquavolt.settings import InfluxSettings
from aquavolt.wire import MAX_PAYLOAD_BYTES, Batch, DeadLetter, Reading, Topics, decode, encode

OLD_WEEK_MS = 1_600_000_000_000  # 2020-09-13: another shard than T0_MS


def test_malformed_payloads_and_type_conflict_are_dead_lettered(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    # Another tool wrote "value" as an integer in an old shard: our floats conflict there.
    Influx(influx_settings).write(
        [f"telemetry,device=d-1,gateway=gw-x,point=other value=5i {OLD_WEEK_MS - 1000}"])
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
    collectors.append(c)
    good_before = cx.make_batches("gw-x", devices=3, batches=20, readings=10)
    good_after = cx.make_batches("gw-x", devices=3, batches=20, readings=10, t0_ms=cx.T0_MS + 60_000)
    mixed = Batch(gateway="gw-x", device="d-1", seq=999, readings=[
        Reading(point="flow_lps", value=1.5, ts_ms=OLD_WEEK_MS),  # conflicts
        Reading(point="label", value="ok", ts_ms=OLD_WEEK_MS),  # text field: no conflict
        Reading(point="flow_lps", value=2.5, ts_ms=cx.T0_MS + 500),  # current shard: fine
    ])
    bad = [
        (topics.data("gw-x", "d-1"), b"{not json"),
        (topics.data("gw-x", "d-1"), json.dumps({"v": 1, "gateway": "gw-x", "device": "d-1", "seq": 1,
         "readings": [{"point": "flow_lps", "value": 1.0, "ts_ms": 1, "quality": "great"}]}).encode()),
        (topics.data("gw-x", "d-2"), encode(Batch(gateway="gw-y", device="d-2", seq=1,
                                                  readings=[Reading(point="a", value=1, ts_ms=1)]))),
        (topics.alarm_events, b'{"v": 1}'),
        (topics.data("gw-x", "d-1"), b"\xff\xfe binary"),
    ]
    with Recorder(mosquitto.settings(), [topics.deadletter("collector")], "dl-rec") as rec:
        publisher.publish_many(cx.batch_items(topics, good_before))
        publisher.publish_many(bad)
        publisher.publish(topics.data("gw-x", "d-1"), encode(mixed))
        publisher.publish_many(cx.batch_items(topics, good_after))
        n = (len(good_before) + len(good_after)) * 10 + 2
        assert cx.wait_count(influx_settings, n, q="SELECT count(\"quality\") FROM \"telemetry\" "
                             "WHERE gateway = 'gw-x'") == n
        assert rec.wait_for(lambda msgs: len(msgs) >= 6)
        letters = [decode(m.payload, DeadLetter) for m in rec.snapshot()]

    want = cx.expected_points([*good_before, *good_after])
    got = {k: v for k, v in cx.telemetry(influx_settings).items() if k[2].startswith("p_")}
    assert got == want
    rows = Influx(influx_settings).rows("SELECT * FROM \"telemetry\" WHERE point = 'flow_lps' OR "
                                        "point = 'label' GROUP BY *")
    assert sorted((r["point"], r["time"], r["value"], r["text"]) for r in rows) == [
        ("flow_lps", cx.T0_MS + 500, 2.5, None), ("label", OLD_WEEK_MS, None, "ok")]

    assert len(letters) == 6
    reasons = [d.reason for d in letters]
    assert sum(r.startswith("malformed: ") for r in reasons) == 5
    assert any("JSON" in r or "json" in r for r in reasons)
    assert any("quality" in r for r in reasons)
    assert any("gw-y" in r for r in reasons)
    assert any("AlarmEvent" in r for r in reasons)
    conflict = [d for d in letters if d.reason.startswith("rejected: ")]
    assert len(conflict) == 1
    assert "field type conflict" in conflict[0].reason
    assert conflict[0].payload.startswith("telemetry,device=d-1,gateway=gw-x,point=flow_lps value=1.5")
    assert conflict[0].topic == topics.data("gw-x", "d-1")
    assert any(d.payload.startswith("base64:") for d in letters)

    in_file = [decode(line, DeadLetter) for line in
               (tmp_path / "c1" / "deadletter.jsonl").read_text().splitlines()]
    assert sorted(d.reason for d in in_file) == sorted(reasons)
    m = c.metrics()
    assert m['aquavolt_collector_deadletters_total{reason="malformed"}'] == 5
    assert m['aquavolt_collector_deadletters_total{reason="rejected"}'] == 1
    assert c.proc.poll() is None


def test_strict_input_refused_reading_by_reading_and_the_rest_stored(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    """Coerced types, non-finite numbers, a 5 MB string, a string for a float point and a
    timestamp ten years ahead: each bad reading is dead-lettered with its index and reason,
    the others of the same message are stored; a bad envelope refuses its message."""
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
    collectors.append(c)
    now_ms = int(time.time() * 1000)
    ten_years_ms = now_ms + 10 * 365 * 86_400_000
    t = cx.T0_MS
    birth = {"v": 1, "gateway": "gw-s", "device": "d-1", "state": "online", "ts_ms": t,
             "points": [{"name": "flow_lps", "type": "float32"}, {"name": "label", "type": "string"}]}

    def ok(i: int) -> str:
        return f'{{"point": "ok_{i}", "value": {i}.5, "ts_ms": {t}}}'

    bad = [  # (reading as JSON text, what the reason must say)
        (f'{{"point": "flow_lps", "value": 1.0, "ts_ms": "{t}"}}', "readings.1.ts_ms: Input should be a valid integer"),
        (f'{{"point": "flow_lps", "value": "24.8", "ts_ms": {t}}}', "readings.3.value: a string for point flow_lps"),
        (f'{{"point": "flow_lps", "value": NaN, "ts_ms": {t}}}', "readings.5.value: Input should be a finite number"),
        (f'{{"point": "flow_lps", "value": Infinity, "ts_ms": {t}}}', "readings.7.value: Input should be a finite"),
        (f'{{"point": "flow_lps", "value": true, "ts_ms": {t + 1}.0}}', "readings.9.ts_ms: Input should be a valid"),
        (f'{{"point": "label", "value": "{"x" * 5_000}", "ts_ms": {t}}}', "readings.11.value: String should have at most"),
    ]
    future = f'{{"point": "flow_lps", "value": 3.5, "ts_ms": {ten_years_ms}}}'  # index 13
    body = ", ".join(f"{ok(2 * k)}, {r}" for k, r in enumerate([r for r, _ in bad] + [future]))
    body += f", {ok(2 * len(bad) + 2)}"
    mixed = (f'{{"v": 1, "gateway": "gw-s", "device": "d-1", "seq": 1, "readings": [{body}]}}').encode()
    coerced = (f'{{"v": 1, "gateway": "gw-s", "device": "d-1", "seq": "4", "readings": [{ok(99)}]}}').encode()
    health_ahead = (f'{{"v": 1, "gateway": "gw-s", "ts_ms": {ten_years_ms}, "uptime_s": 1.0, "buffer": '
                    '{"depth": 0, "bytes": 0, "oldest_age_s": 0.0, "dropped": 0}}').encode()
    with Recorder(mosquitto.settings(), [topics.deadletter("collector")], "dl-strict") as rec:
        publisher.publish(topics.device_status("gw-s", "d-1"), json.dumps(birth).encode())
        publisher.publish(topics.data("gw-s", "d-1"), mixed)
        publisher.publish(topics.data("gw-s", "d-1"), coerced)
        publisher.publish(topics.health("gw-s"), health_ahead)
        n = len(bad) + 2
        assert rec.wait_for(lambda msgs: len(msgs) >= len(bad) + 3, 20)
        assert cx.wait_count(influx_settings, n, q="SELECT count(\"quality\") FROM \"telemetry\" "
                             "WHERE gateway = 'gw-s'") == n
        letters = [decode(m.payload, DeadLetter) for m in rec.snapshot()]

    rows = Influx(influx_settings).rows("SELECT * FROM \"telemetry\" WHERE gateway = 'gw-s' GROUP BY *")
    assert sorted((r["point"], r["value"]) for r in rows) == sorted(
        (f"ok_{2 * k}", 2 * k + 0.5) for k in range(len(bad) + 2))  # the bad ones: none stored
    assert Influx(influx_settings).rows(f"SELECT * FROM \"telemetry\" WHERE time >= {now_ms + 3_600_000}ms") == []
    assert Influx(influx_settings).rows("SELECT * FROM \"gateway_health\" WHERE gateway = 'gw-s'") == []
    reasons = [d.reason for d in letters]
    assert all(d.topic.startswith(f"{topic_prefix}/gw/gw-s/") for d in letters)
    for _reading, want in bad:
        assert sum(r.startswith(f"malformed: Batch: {want}") for r in reasons) == 1, (want, reasons)
    assert sum(r.startswith(f"future: Batch: readings.13.ts_ms: {ten_years_ms} is ")
               and r.endswith("s ahead of the collector's clock (max_future_s 300)") for r in reasons) == 1
    assert any(r == "malformed: Batch: seq: Input should be a valid integer" for r in reasons)
    assert any(r.startswith("future: Health: ts_ms: ") and "ahead" in r for r in reasons)
    nan_letter = next(d for d in letters if "readings.5." in d.reason)
    assert json.loads(nan_letter.payload)["point"] == "flow_lps"  # the reading refused, not the batch
    m = c.metrics()
    assert m['aquavolt_collector_deadletters_total{reason="malformed"}'] == len(bad) + 1
    assert m['aquavolt_collector_deadletters_total{reason="future"}'] == 2
    assert c.proc.poll() is None


def test_oversize_payload_refused_by_the_broker_and_by_the_collector(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    huge = b'{"v": 1, "gateway": "gw-o", "device": "d-1", "seq": 1, "readings": [' + b" " * MAX_PAYLOAD_BYTES + b"]}"
    small = encode(Batch(gateway="gw-o", device="d-1", seq=2, readings=[
        Reading(point="p", value=1.0, ts_ms=cx.T0_MS)]))
    # the broker's configured limit: the oversize message never reaches a subscriber
    assert f"message_size_limit {MAX_PAYLOAD_BYTES}" in (mosquitto.workdir / "mosquitto.conf").read_text()
    # (Mosquitto 2.0 advertises it to MQTT 5 clients as the Maximum Packet Size in CONNACK,
    # and disconnects a client that sends a larger message)
    with Recorder(mosquitto.settings(), [topics.data("gw-o", "+")], "size-rec") as rec:
        gone = threading.Event()
        big = make_client(mosquitto.settings(), "size-pub")
        big.on_disconnect = lambda *_a: gone.set()
        big.connect(mosquitto.settings().host, mosquitto.settings().port)
        big.loop_start()
        try:
            big.publish(topics.data("gw-o", "d-1"), huge, qos=1)
            assert gone.wait(10), "the broker took a message over its limit"
        finally:
            big.disconnect()
            big.loop_stop()
        publisher.publish(topics.data("gw-o", "d-1"), small)
        assert rec.wait_for(lambda msgs: any(m.payload == small for m in msgs))
        assert [m.payload for m in rec.snapshot()] == [small]

    # a broker without the limit lets it through: the collector refuses it before parsing
    open_broker = Mosquitto(tmp_path / "open-broker", message_size_limit=0)
    open_broker.start()
    try:
        url = open_broker.url() + f"?prefix={topic_prefix}"
        c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
        collectors.append(c)
        pub = cx.Publisher(open_broker.settings(), "pub-open")
        try:
            with Recorder(open_broker.settings(), [topics.deadletter("collector")], "dl-size") as rec:
                pub.publish(topics.data("gw-o", "d-1"), huge)
                pub.publish(topics.data("gw-o", "d-1"), small)
                assert cx.wait_count(influx_settings, 1, q="SELECT count(\"quality\") FROM \"telemetry\" "
                                     "WHERE gateway = 'gw-o'") == 1
                assert rec.wait_for(lambda msgs: len(msgs) >= 1)
                letter = decode(rec.snapshot()[0].payload, DeadLetter)
        finally:
            pub.close()
        assert letter.reason == (f"malformed: payload: {len(huge)} bytes, larger than the limit of "
                                 f"{MAX_PAYLOAD_BYTES} bytes")
        assert letter.payload.endswith("…(truncated)")
        c.stop()
    finally:
        open_broker.stop()


def test_time_window_follows_a_simulated_clock_ahead_of_the_wall(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a simulated run the collector's clock is the simulated time when that is ahead of
    the wall: a field replayed in 2031 is stored, what is stamped beyond the window of that
    time is not."""
    start_ms = 1_924_992_000_000  # 2031-01-01T00:00:00Z
    monkeypatch.setenv("AQUAVOLT_CLOCK", "start=2031-01-01T00:00:00Z,accel=1")
    topics = Topics(topic_prefix)
    c = cx.CollectorProcess(mosquitto.url() + f"?prefix={topic_prefix}", influx_settings,
                            tmp_path / "c1", "--max-future-s", "60").start()
    collectors.append(c)
    batch = Batch(gateway="gw-t", device="d-1", seq=1, readings=[
        Reading(point="now", value=1.0, ts_ms=start_ms + 1000),
        Reading(point="later", value=2.0, ts_ms=start_ms + 3_600_000)])
    with Recorder(mosquitto.settings(), [topics.deadletter("collector")], "dl-sim") as rec:
        publisher.publish(topics.data("gw-t", "d-1"), encode(batch))
        assert rec.wait_for(lambda msgs: len(msgs) >= 1)
        letter = decode(rec.snapshot()[0].payload, DeadLetter)
    assert cx.wait_count(influx_settings, 1, q="SELECT count(\"quality\") FROM \"telemetry\" "
                         "WHERE gateway = 'gw-t'") == 1
    rows = Influx(influx_settings).rows("SELECT * FROM \"telemetry\" WHERE gateway = 'gw-t' GROUP BY *")
    assert [(r["point"], r["time"]) for r in rows] == [("now", start_ms + 1000)]
    assert letter.reason.startswith(f"future: Batch: readings.1.ts_ms: {start_ms + 3_600_000} is ")
    assert letter.reason.endswith("(max_future_s 60)")
