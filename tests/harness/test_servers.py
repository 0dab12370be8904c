"""The real servers every component is tested against: Mosquitto (plain, and TLS with
passwords and an ACL) and InfluxDB 1.x."""

import ssl
import time
import uuid

import pytest

from aquavolt.harness.servers import InfluxDB, Mosquitto
from aquavolt.influx import Influx, InfluxError
from aquavolt.mqtt import Recorder, make_client
from aquavolt.schema import TELEMETRY, continuous_queries, line
from aquavolt.settings import InfluxSettings, MqttSettings


def _publish(settings: MqttSettings, topic: str, payloads: list[bytes]) -> list[int]:
    client = make_client(settings, f"pub-{uuid.uuid4().hex[:8]}")
    rc = client.connect(settings.host, settings.port)
    assert rc == 0
    client.loop_start()
    codes = []
    try:
        for p in payloads:
            info = client.publish(topic, p, qos=1)
            info.wait_for_publish(5)
            codes.append(info.rc)
    finally:
        client.disconnect()
        client.loop_stop()
    return codes


def test_publish_subscribe_plain(mosquitto: Mosquitto, topic_prefix: str) -> None:
    s = mosquitto.settings()
    topic = f"{topic_prefix}/gw/g1/dev/d1/data"
    with Recorder(s, [f"{topic_prefix}/#"], "rec") as rec:
        _publish(s, topic, [f"m{i}".encode() for i in range(50)])
        assert rec.wait_for(lambda m: len(m) >= 50, 10)
    assert [m.payload for m in rec.messages] == [f"m{i}".encode() for i in range(50)]


def test_broker_restart_keeps_persistent_session(mosquitto: Mosquitto, topic_prefix: str) -> None:
    """A QoS 1 subscriber with a persistent session gets what was published while it was
    away, even across a broker restart (persistence on)."""
    s = mosquitto.settings()
    cid = f"sess-{uuid.uuid4().hex[:8]}"
    sub = make_client(s, cid)
    from aquavolt.mqtt import connect_properties

    sub.connect(s.host, s.port, clean_start=False, properties=connect_properties(3600))
    sub.loop_start()
    r = sub.subscribe(f"{topic_prefix}/x", qos=1)
    assert r[0] == 0
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()
    _publish(s, f"{topic_prefix}/x", [b"while-away"])
    mosquitto.restart()
    got: list[bytes] = []
    sub2 = make_client(s, cid)
    sub2.on_message = lambda _c, _u, m: got.append(m.payload)
    sub2.connect(s.host, s.port, clean_start=False, properties=connect_properties(3600))
    sub2.loop_start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    sub2.disconnect()
    sub2.loop_stop()
    assert got == [b"while-away"]


def test_tls_with_password_and_acl(mosquitto_secure: Mosquitto, topic_prefix: str) -> None:
    gw = mosquitto_secure.settings("edge-gw1", "gw1-secret")
    col = mosquitto_secure.settings("collector", "collector-secret")
    assert gw.tls and gw.ca_file
    own = "aquavolt/v1/gw/edge-gw1/dev/d1/data"
    other = "aquavolt/v1/gw/other-gw/dev/d1/data"
    with Recorder(col, ["aquavolt/v1/#"], f"col-{uuid.uuid4().hex[:6]}") as rec:
        _publish(gw, own, [b"allowed"])
        _publish(gw, other, [b"denied"])  # the ACL drops it silently (MQTT 5 may say 135)
        assert rec.wait_for(lambda m: any(x.payload == b"allowed" for x in m), 10)
        time.sleep(0.5)
    payloads = [m.payload for m in rec.messages]
    assert b"allowed" in payloads and b"denied" not in payloads


def _connack(settings: MqttSettings) -> object:
    """The CONNACK reason code the broker answers these settings with (None: no CONNACK)."""
    client = make_client(settings, f"probe-{uuid.uuid4().hex[:6]}")
    codes: list[object] = []
    client.on_connect = lambda _c, _u, _f, rc, _p=None: codes.append(rc)
    try:
        client.connect(settings.host, settings.port, keepalive=5)
    except (OSError, ssl.SSLError):
        return None
    client.loop_start()
    deadline = time.monotonic() + 3
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return codes[0] if codes else None


def test_tls_refuses_wrong_password_and_plain_connections(mosquitto_secure: Mosquitto) -> None:
    good = _connack(mosquitto_secure.settings("admin", "admin-secret"))
    assert good is not None and not good.is_failure  # type: ignore[attr-defined]
    bad = _connack(mosquitto_secure.settings("edge-gw1", "wrong"))
    assert bad is not None and bad.is_failure  # type: ignore[attr-defined]
    plain = _connack(MqttSettings(host="127.0.0.1", port=mosquitto_secure.port))
    assert plain is None


def test_influx_write_and_query(influx_settings: InfluxSettings) -> None:
    db = Influx(influx_settings)
    lines = [
        line(TELEMETRY, {"gateway": "g1", "device": "d1", "point": "flow_lps"},
             {"value": 1.5 + i, "quality": 192}, 1_700_000_000_000 + i * 1000)
        for i in range(10)
    ]
    db.write(lines)
    rows = db.rows(f'SELECT * FROM "{TELEMETRY}" WHERE device=\'d1\'')
    assert [r["value"] for r in rows] == [1.5 + i for i in range(10)]
    assert rows[0]["time"] == 1_700_000_000_000 and rows[0]["quality"] == 192
    assert rows[0]["point"] == "flow_lps"


def test_influx_rejects_type_conflict_with_400(influx_settings: InfluxSettings) -> None:
    db = Influx(influx_settings)
    db.write([line("m", {"device": "d"}, {"value": 1.0}, 1000)])
    with pytest.raises(InfluxError) as info:
        db.write([line("m", {"device": "d"}, {"value": "text"}, 2000)])
    assert info.value.status == 400 and "conflict" in str(info.value)


def test_influx_rollups_created(influx_settings: InfluxSettings) -> None:
    db = Influx(influx_settings)
    db.execute(continuous_queries(influx_settings.database))
    cqs = db.query("SHOW CONTINUOUS QUERIES")
    names = {row[0] for s in cqs if s["name"] == influx_settings.database for row in s["values"]}
    assert names == {"cq_telemetry_1m", "cq_telemetry_1h", "cq_telemetry_1d"}


def test_influx_stop_and_restart_keeps_data(influxdb: InfluxDB, influx_settings: InfluxSettings) -> None:
    db = Influx(influx_settings)
    db.write([line("m", {"device": "d"}, {"value": 42.0}, 1000)])
    influxdb.stop()
    assert not db.ping()
    influxdb.start()
    assert db.rows('SELECT "value" FROM "m"')[0]["value"] == 42.0
