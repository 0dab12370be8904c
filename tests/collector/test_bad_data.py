"""Bad data is isolated: malformed payloads and points InfluxDB refuses (a field type
conflict) go to the dead letter (file and MQTT topic) with the reason, counted; everything
else is written; the collector goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aquavolt.influx import Influx
from aquavolt.mqtt import Recorder
from aquavolt.settings import InfluxSettings
from aquavolt.wire import Batch, DeadLetter, Reading, Topics, decode, encode
from harness.servers import Mosquitto

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
