"""The centre as a Sparkplug B primary host application, against Eclipse Tahu's
``sparkplug-client`` as the edge node (``node/edge-node.js``), a real Mosquitto and InfluxDB:

- the collector stores what the node published (births, live and historical data) in
  aquavolt's own schema, answers a sequence gap with a rebirth request the node obeys,
  dead-letters what it cannot read, marks the node's devices offline at its death, and keeps
  its STATE retained (online, then offline when it stops);
- the rules engine raises the same alarms for the node as for an aquavolt gateway: a limit on
  its readings, ``comm_fail`` on a DDEATH, ``gateway_offline`` on its NDEATH.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import paho.mqtt.client as mqtt

from aquavolt.harness.servers import Mosquitto
from aquavolt.influx import Influx, InfluxError
from aquavolt.mqtt import Recorder, make_client
from aquavolt.settings import InfluxSettings
from aquavolt.wire import AlarmEvent, GatewayStatus, Topics, decode, encode

GW = "gw-plc"


def _publisher(mosquitto: Mosquitto) -> mqtt.Client:
    c = make_client(mosquitto.settings(), f"pub-{time.monotonic_ns()}")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    return c


def _rows(influx: InfluxSettings, q: str) -> list[dict[str, Any]]:
    try:
        return Influx(influx).rows(q)
    except InfluxError:
        return []


def _wait_rows(influx: InfluxSettings, q: str, ok: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    rows = _rows(influx, q)
    while not ok(rows) and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = _rows(influx, q)
    return rows


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_collector_stores_a_tahu_edge_node(centre: Any, influx_settings: InfluxSettings) -> None:
    t = Topics(centre.prefix)
    telemetry = 'SELECT "value", "quality" FROM "telemetry" WHERE "gateway" = \'gw-plc\' GROUP BY *'
    with Recorder(centre.mosquitto.settings(), [f"spBv1.0/STATE/{centre.host_id}", t.deadletter("collector"),
                                                f"spBv1.0/{centre.group}/NCMD/#"], "rec-spb-c") as rec:
        collector, port = centre.collector(f"{influx_settings.url}/{influx_settings.database}")
        # the STATE comes after the SUBSCRIBE: once it is seen, the collector hears the node
        assert rec.wait_for(lambda ms: any(m.topic.startswith("spBv1.0/STATE/") for m in ms), 15), collector.log()
        state = next(m for m in rec.snapshot() if m.topic.startswith("spBv1.0/STATE/"))
        assert json.loads(state.payload)["online"] is True

        node = centre.node()
        births = node.wait("births")
        b_ts = births["timestamp"]
        rows = _wait_rows(influx_settings, telemetry, lambda r: len(r) >= 5)
        got = {(r["device"], r["point"], r["time"]): r["value"] for r in rows}
        assert got == {("pt-line", "pressure_bar", b_ts): 3.5,
                       ("fm-1", "flow_lps", b_ts): 12.5, ("fm-1", "volume_m3", b_ts): 1000.25,
                       ("fm-2", "flow_lps", b_ts): 2.25, ("fm-2", "volume_m3", b_ts): 50.5}
        assert {r["quality"] for r in rows} == {192}

        # data by exception with aliases; one historical value, stamped long ago; a node metric
        old = b_ts - 3_600_000
        node.send(op="ddata", device="Meter1", metrics=[
            {"name": "Flow/Rate", "value": 13.75, "timestamp": b_ts + 1000},
            {"name": "Flow/Total", "value": 999.5, "timestamp": old, "historical": True},
            {"name": "Extra", "value": 8}])  # in the birth, not in the field file: dead-lettered
        node.send(op="ndata", metrics=[{"name": "Line/Pressure", "value": 3.25, "timestamp": b_ts + 2000}])
        rows = _wait_rows(influx_settings, telemetry, lambda r: len(r) >= 8)
        got = {(r["device"], r["point"], r["time"]): r["value"] for r in rows}
        assert got[("fm-1", "flow_lps", b_ts + 1000)] == 13.75
        assert got[("fm-1", "volume_m3", old)] == 999.5
        assert got[("pt-line", "pressure_bar", b_ts + 2000)] == 3.25
        assert len(got) == 8

        # a lost message: the gap is counted and a rebirth asked, which the node answers
        node.send(op="lose")
        node.send(op="ddata", device="Meter2", metrics=[{"name": "Flow/Rate", "value": 4.5}])
        node.wait("rebirth_requested")
        node.wait("births")
        assert rec.wait_for(lambda ms: any("/NCMD/" in m.topic for m in ms), 5)
        assert _metric(port, "aquavolt_collector_sparkplug_seq_gaps_total") == 1

        # what cannot be read is dead-lettered with its reason, and the collector goes on
        pub = _publisher(centre.mosquitto)
        try:
            pub.publish(f"spBv1.0/{centre.group}/DDATA/PLC-7/Meter1", b"\xff\x00 not protobuf", qos=1)
            pub.publish(f"spBv1.0/{centre.group}/NBIRTH/Other-Node", b"", qos=1)
            want = ("not a Sparkplug B payload", "unknown edge node", "neither in the field file nor in the birth: Extra")

            def reasons() -> list[str]:
                return [json.loads(m.payload)["reason"] for m in rec.snapshot() if m.topic == t.deadletter("collector")]
            assert rec.wait_for(lambda _ms: all(any(w in r for r in reasons()) for w in want), 10), reasons()
            assert all(r.startswith("sparkplug: ") for r in reasons())
        finally:
            pub.disconnect()
            pub.loop_stop()

        # death: the will marks the node offline and its devices with it, as aquavolt's status does
        node.kill()
        status = 'SELECT "state", "reason" FROM "device_status" WHERE "gateway" = \'gw-plc\' GROUP BY *'
        rows = _wait_rows(influx_settings, status,
                          lambda r: {x["device"] for x in r if x["state"] == "offline"} == {"pt-line", "fm-1", "fm-2"})
        assert {x["device"] for x in rows if x["state"] == "offline"} == {"pt-line", "fm-1", "fm-2"}
        gw_rows = _rows(influx_settings, 'SELECT "state", "online" FROM "gateway_status" WHERE "gateway" = \'gw-plc\'')
        assert [r["state"] for r in gw_rows][-1] == "offline" and gw_rows[-1]["online"] == 0

        assert collector.stop() == 0
        assert rec.wait_for(lambda ms: any(m.topic.startswith("spBv1.0/STATE/")
                                           and json.loads(m.payload)["online"] is False for m in ms), 5)
    # retained: a host application connecting later learns it is offline
    with Recorder(centre.mosquitto.settings(), [f"spBv1.0/STATE/{centre.host_id}"], "rec-spb-c2") as later:
        assert later.wait_for(bool, 5)
        m = later.snapshot()[0]
        assert m.retain and json.loads(m.payload) == {"online": False,
                                                       "timestamp": json.loads(state.payload)["timestamp"]}
    pub = _publisher(centre.mosquitto)
    pub.publish(f"spBv1.0/STATE/{centre.host_id}", b"", qos=1, retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()


def http_get(port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())


def _raised(rec: Recorder, topic: str) -> dict[str, AlarmEvent]:
    return {e.alarm_id: e for m in rec.snapshot() if m.topic == topic
            for e in [decode(m.payload, AlarmEvent)] if e.transition == "raised"}


def test_rules_alarms_on_a_tahu_edge_node_as_on_an_aquavolt_gateway(centre: Any) -> None:
    t = Topics(centre.prefix)
    with Recorder(centre.mosquitto.settings(), [t.alarm_events, t.deadletter("rules")], "rec-spb-r") as rec:
        _r, port = centre.rules()
        node = centre.node()
        node.wait("births")
        # its readings drive the detectors: a limit on fm-1's flow
        node.send(op="ddata", device="Meter1", metrics=[{"name": "Flow/Rate", "value": 150.0}])
        assert rec.wait_for(lambda _ms: "fm-1/flow_lps_high" in _raised(rec, t.alarm_events), 10), http_get(port)
        # a device's death: its comm_fail
        node.send(op="ddeath", device="Meter2")
        assert rec.wait_for(lambda _ms: "fm-2/comm_fail" in _raised(rec, t.alarm_events), 10)
        # the node's death and an aquavolt gateway's: the same alarm
        pub = _publisher(centre.mosquitto)
        try:
            now = int(time.time() * 1000)
            for state in ("online", "offline"):
                pub.publish(t.gateway_status("gw-1"), encode(GatewayStatus(gateway="gw-1", state=state, bd_seq=0,
                                                                           ts_ms=now)), qos=1)
            node.kill()
            assert rec.wait_for(lambda _ms: {"gw-1/gateway_offline", f"{GW}/gateway_offline"}
                                <= set(_raised(rec, t.alarm_events)), 10), _raised(rec, t.alarm_events)
        finally:
            pub.disconnect()
            pub.loop_stop()
        ev = _raised(rec, t.alarm_events)
        ours, theirs = ev["gw-1/gateway_offline"], ev[f"{GW}/gateway_offline"]
        assert (theirs.condition, theirs.priority, theirs.state) == (ours.condition, ours.priority, ours.state)
        assert theirs.asset == GW
        assert not [m for m in rec.snapshot() if m.topic == t.deadletter("rules")]
