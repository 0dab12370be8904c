"""Readings in, equal points out: values, timestamps, qualities, strings, booleans, and the
other measurements (status, health, alarm events, customer alerts), with the collector as a
real process between the real Mosquitto and the real InfluxDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aquavolt.harness.servers import Mosquitto
from aquavolt.influx import Influx
from aquavolt.settings import InfluxSettings
from aquavolt.wire import (
    AlarmEvent,
    AlarmState,
    Batch,
    BufferHealth,
    CustomerAlert,
    DeviceHealth,
    DeviceState,
    DeviceStatus,
    GatewayState,
    GatewayStatus,
    Health,
    PointInfo,
    Quality,
    Reading,
    Topics,
    encode,
)


def test_readings_in_equal_points_out(mosquitto: Mosquitto, influx_settings: InfluxSettings,
                                      topic_prefix: str, tmp_path: Path, collectors: list[Any],
                                      publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
    collectors.append(c)
    batches = cx.make_batches("gw-a", devices=5, batches=40, readings=10)
    odd = Batch(gateway="gw-b", device="meter.1", seq=7, readings=[
        Reading(point="energy_kwh", value=123456789.123456, ts_ms=cx.T0_MS + 1),
        Reading(point="tiny_v", value=1.5e-300, ts_ms=cx.T0_MS + 2),
        Reading(point="huge_w", value=3.0e300, ts_ms=cx.T0_MS + 3),
        Reading(point="count_n", value=42, ts_ms=cx.T0_MS + 4),
        Reading(point="running", value=True, ts_ms=cx.T0_MS + 5),
        Reading(point="stopped", value=False, ts_ms=cx.T0_MS + 6),
        Reading(point="label", value='pump "A", north=1 \\ ok', ts_ms=cx.T0_MS + 7),
        Reading(point="fault_code", value=None, ts_ms=cx.T0_MS + 8, quality=Quality.BAD),
        Reading(point="flow_lps", value=-0.0001, ts_ms=cx.T0_MS + 9, quality=Quality.STALE),
        Reading(point="flow_lps", value=7.0, ts_ms=cx.T0_MS + 10, quality=Quality.UNCERTAIN),
    ])
    publisher.publish_many(cx.batch_items(topics, [*batches, odd]))
    n = len(batches) * 10 + len(odd.readings)
    assert cx.wait_count(influx_settings, n) == n

    got = cx.telemetry(influx_settings)
    want = cx.expected_points(batches)
    assert {k: v for k, v in got.items() if k[0] == "gw-a"} == want

    rows = Influx(influx_settings).rows(
        "SELECT \"value\", \"text\", \"quality\" FROM \"telemetry\" WHERE gateway = 'gw-b' GROUP BY *")
    by_point = {(r["point"], r["time"]): (r["value"], r["text"], r["quality"]) for r in rows}
    t = cx.T0_MS
    assert by_point == {
        ("energy_kwh", t + 1): (123456789.123456, None, 192),
        ("tiny_v", t + 2): (1.5e-300, None, 192),
        ("huge_w", t + 3): (3.0e300, None, 192),
        ("count_n", t + 4): (42.0, None, 192),
        ("running", t + 5): (1.0, None, 192),
        ("stopped", t + 6): (0.0, None, 192),
        ("label", t + 7): (None, 'pump "A", north=1 \\ ok', 192),
        ("fault_code", t + 8): (None, None, 0),
        ("flow_lps", t + 9): (-0.0001, None, 500),
        ("flow_lps", t + 10): (7.0, None, 64),
    }
    # tags: only gateway, device, point (bounded cardinality)
    keys = Influx(influx_settings).query('SHOW TAG KEYS FROM "telemetry"')
    assert sorted(v[0] for v in keys[0]["values"]) == ["device", "gateway", "point"]

    m = c.metrics()
    assert m["aquavolt_collector_readings_total"] == n
    assert m["aquavolt_collector_points_written_total"] >= n
    assert m["aquavolt_collector_acks_total"] == len(batches) + 1
    assert m['aquavolt_collector_deadletters_total{reason="malformed"}'] == 0
    # collector_stats reaches InfluxDB too (every second here)
    q = 'SELECT count("points_written_total") FROM "collector_stats"'
    assert cx.wait_count(influx_settings, 1, q=q) >= 1
    assert cx.check_schema(influx_settings) == {"telemetry", "collector_stats"}
    assert c.stop() == 0


def test_status_health_and_events(mosquitto: Mosquitto, influx_settings: InfluxSettings,
                                  topic_prefix: str, tmp_path: Path, collectors: list[Any],
                                  publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    collectors.append(cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start())
    t = cx.T0_MS
    publisher.publish(topics.gateway_status("gw-a"), encode(GatewayStatus(
        gateway="gw-a", state=GatewayState.ONLINE, bd_seq=3, ts_ms=t, devices=["d1", "d2"],
        software="edge 0.1")))
    publisher.publish(topics.device_status("gw-a", "d1"), encode(DeviceStatus(
        gateway="gw-a", device="d1", state=DeviceState.COMM_FAIL, ts_ms=t + 1, profile="sdm630",
        reason="timeout", points=[PointInfo(name="v_l1", unit="V")])))
    publisher.publish(topics.health("gw-a"), encode(Health(
        gateway="gw-a", ts_ms=t + 2, uptime_s=12.5, readings_per_s=40.0,
        buffer=BufferHealth(depth=3, bytes=900, oldest_age_s=1.5, dropped=0),
        devices={"d1": DeviceHealth(state=DeviceState.ONLINE, poll_latency_ms=8.5, polls=10,
                                    errors=1, last_good_ms=t),
                 "d2": DeviceHealth(state=DeviceState.COMM_FAIL, last_error="timeout")})))
    publisher.publish(topics.alarm_events, encode(AlarmEvent(
        alarm_id="tank-1/level_high", asset="tank-1", condition="level_high", state=AlarmState.UNACK,
        transition="raised", priority="high", ts_ms=t + 3, message="Tank 1 level high",
        value=4.75)))
    publisher.publish(topics.customer_alerts, encode(CustomerAlert(
        id="evt-1", customer="c-0001", kind="continuous_flow", language="fr",
        text="Fuite probable", status="queued", ts_ms=t + 4)))
    ix = Influx(influx_settings)
    # the journals go to their retention policy of yearly shards, nothing to autogen's weeks
    assert cx.wait_count(influx_settings, 1, q='SELECT count("state") FROM "rp_events"."alarm_event"') == 1
    assert cx.wait_count(influx_settings, 1, q='SELECT count("text") FROM "rp_events"."customer_alert"') == 1

    def one(q: str) -> dict[str, Any]:
        rows = ix.rows(q)
        assert len(rows) == 1, (q, rows)
        return rows[0]

    gs = one('SELECT * FROM "gateway_status"')
    assert (gs["time"], gs["gateway"], gs["state"], gs["online"], gs["bd_seq"], gs["devices"]) == \
        (t, "gw-a", "online", 1, 3, 2)
    ds = one('SELECT * FROM "device_status"')
    assert (ds["time"], ds["device"], ds["state"], ds["online"], ds["reason"], ds["points"]) == \
        (t + 1, "d1", "comm_fail", 0, "timeout", 1)
    gh = one('SELECT * FROM "gateway_health"')
    assert (gh["time"], gh["uptime_s"], gh["buffer_depth"], gh["buffer_oldest_age_s"]) == (t + 2, 12.5, 3, 1.5)
    dh = {r["device"]: r for r in ix.rows('SELECT * FROM "device_health" GROUP BY *')}
    assert dh["d1"]["poll_latency_ms"] == 8.5 and dh["d1"]["last_good_ms"] == t
    assert dh["d2"]["state"] == "comm_fail" and dh["d2"]["last_error"] == "timeout"
    assert ix.rows('SELECT count("state") FROM "autogen"."alarm_event"') == []
    assert ix.rows('SELECT count("text") FROM "autogen"."customer_alert"') == []
    ae = one('SELECT * FROM "rp_events"."alarm_event"')
    assert (ae["time"], ae["asset"], ae["condition"], ae["priority"], ae["state"], ae["active"],
            ae["value"]) == (t + 3, "tank-1", "level_high", "high", "unack", 1, 4.75)
    ca = one('SELECT * FROM "rp_events"."customer_alert"')
    assert (ca["time"], ca["customer"], ca["kind"], ca["status"], ca["text"]) == \
        (t + 4, "c-0001", "continuous_flow", "queued", "Fuite probable")
    assert "phone" not in ca
    assert cx.check_schema(influx_settings) >= {"gateway_status", "device_status", "gateway_health",
                                                "device_health", "alarm_event", "customer_alert"}
