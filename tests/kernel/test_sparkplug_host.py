"""The centre's reading of a Sparkplug B edge node (``aquavolt.sparkplug_host``), message by
message: births drive the mapping, aliases resolve, seq gaps and unknown aliases ask for a
rebirth (at most once per hold-off), deaths need their birth's bdSeq, and what cannot be read
is given back as a reason. Pure: payloads are encoded with the kernel's codec."""

from __future__ import annotations

from pathlib import Path

from aquavolt import sparkplug_b_pb2 as pb
from aquavolt.config import load_field
from aquavolt.sparkplug import (
    DataType,
    Metric,
    Payload,
    PropertyValue,
    bd_seq_metric,
    decode_payload,
    encode_payload,
)
from aquavolt.sparkplug_host import Outcome, SparkplugHost
from aquavolt.wire import Batch, DeviceStatus, GatewayStatus, Quality, Topics

FIELD = Path(__file__).parents[1] / "sparkplug" / "field.yaml"
G, N = "spBv1.0/Plant1", "PLC-7"
NOW = 1_790_000_000_000


LOADED = load_field(FIELD)


def _host() -> SparkplugHost:
    return SparkplugHost(LOADED.field, Topics("aquavolt/v1"))


def _p(seq: int | None, *metrics: Metric, ts: int = NOW) -> bytes:
    return encode_payload(Payload(timestamp=ts, seq=seq, metrics=metrics))


def _born(h: SparkplugHost, bd: int = 3) -> None:
    h.handle(f"{G}/NBIRTH/{N}", _p(0, Metric(name="Line/Pressure", alias=1, datatype=DataType.Float, value=3.5),
                                   bd_seq_metric(bd)), NOW)
    out = h.handle(f"{G}/DBIRTH/{N}/Meter1", _p(1, Metric(
        name="Flow/Rate", alias=10, datatype=DataType.Float, value=1.5,
        properties={"engUnit": PropertyValue(DataType.String, "L/s")}),
        Metric(name="Flow/Total", alias=11, datatype=DataType.Double, value=7.25),
        Metric(name="Extra", alias=12, datatype=DataType.Int32, value=1)), NOW)
    assert not out.dead  # a birth may declare metrics the field does not map


def _batches(out: Outcome) -> list[Batch]:
    return [m for _t, m in out.messages if isinstance(m, Batch)]


def test_births_give_status_and_values() -> None:
    h = _host()
    assert h.filters() == ["spBv1.0/Plant1/#"]
    out = h.handle(f"{G}/NBIRTH/{N}", _p(0, Metric(name="Line/Pressure", alias=1, datatype=DataType.Float,
                                                   value=3.5), bd_seq_metric(3)), NOW)
    gs = out.messages[0][1]
    assert isinstance(gs, GatewayStatus) and (gs.gateway, gs.state, gs.bd_seq) == ("gw-plc", "online", 3)
    assert out.messages[0][0] == "aquavolt/v1/gw/gw-plc/status"
    ds = out.messages[1][1]
    assert isinstance(ds, DeviceStatus) and (ds.device, ds.state, ds.profile) == ("pt-line", "online", "av_pressure1")
    [b] = _batches(out)
    assert (b.device, b.readings[0].point, b.readings[0].value, b.readings[0].ts_ms) == \
        ("pt-line", "pressure_bar", 3.5, NOW)


def test_aliased_data_historical_and_quality() -> None:
    h = _host()
    _born(h)
    out = h.handle(f"{G}/DDATA/{N}/Meter1", _p(
        2, Metric(alias=10, datatype=DataType.Float, value=2.5, timestamp=NOW + 5,
                  properties={"Quality": PropertyValue(DataType.Int32, 500)}),
        Metric(alias=11, datatype=DataType.Double, value=6.0, timestamp=NOW - 9000, is_historical=True),
        Metric(alias=12, datatype=DataType.Int32, value=2)), NOW)
    live, old = _batches(out)
    assert not live.historical and old.historical
    assert [(r.point, r.value, r.ts_ms, r.quality) for r in live.readings] == \
        [("flow_lps", 2.5, NOW + 5, Quality.STALE)]
    assert [(r.point, r.value) for r in old.readings] == [("volume_m3", 6.0)]
    assert out.dead == ["Plant1/PLC-7/Meter1: metric(s) neither in the field file nor in the birth: Extra"]
    assert not out.commands and out.gaps == 0


def test_gap_and_unknown_alias_ask_for_one_rebirth() -> None:
    h = _host()
    _born(h)
    out = h.handle(f"{G}/DDATA/{N}/Meter1", _p(5, Metric(alias=10, datatype=DataType.Float, value=1.0)), NOW)
    assert out.gaps == 1 and _batches(out)  # the message itself is kept
    [(topic, payload)] = out.commands
    assert topic == "spBv1.0/Plant1/NCMD/PLC-7"
    m = decode_payload(payload).metric("Node Control/Rebirth")
    assert (m.value, m.datatype) == (True, DataType.Boolean)
    # an alias no birth declared: dead-lettered; a rebirth again only after the hold-off
    out = h.handle(f"{G}/DDATA/{N}/Meter1", _p(6, Metric(alias=99, datatype=DataType.Float, value=1.0)), NOW + 1)
    assert "alias 99" in out.dead[0] and not out.commands
    out = h.handle(f"{G}/DDATA/{N}/Meter1", _p(7, Metric(alias=99, datatype=DataType.Float, value=1.0)),
                   NOW + h.holdoff_ms)
    assert len(out.commands) == 1


def test_deaths() -> None:
    h = _host()
    _born(h, bd=3)
    out = h.handle(f"{G}/DDEATH/{N}/Meter1", _p(2), NOW)
    [(_t, ds)] = out.messages
    assert isinstance(ds, DeviceStatus) and (ds.device, ds.state) == ("fm-1", "comm_fail")
    # a will of another session is ignored (bdSeq)
    assert h.handle(f"{G}/NDEATH/{N}", _p(None, bd_seq_metric(2)), NOW).messages == []
    out = h.handle(f"{G}/NDEATH/{N}", _p(None, bd_seq_metric(3)), NOW + 1)
    assert [(type(m).__name__, getattr(m, "device", None), m.state) for _t, m in out.messages] == [
        ("GatewayStatus", None, "offline"), ("DeviceStatus", "pt-line", "offline")]
    # dead: its data waits for a birth, and asks for it
    out = h.handle(f"{G}/NDATA/{N}", _p(3, Metric(alias=1, datatype=DataType.Float, value=1.0)), NOW + 2)
    assert not out.messages and "before its edge node's NBIRTH" in out.dead[0] and out.commands


def test_what_cannot_be_read() -> None:
    h = _host()
    _born(h)
    for topic, payload, why in [
        ("spBv1.0/Plant1/NBIRTH/Other", _p(0, bd_seq_metric(0)), "unknown edge node Plant1/Other"),
        (f"{G}/DDATA/{N}/Meter1", b"\xff\x01garbage", "not a Sparkplug B payload"),
        (f"{G}/DBIRTH/{N}/Meter9", _p(2), "device 'Meter9'"),
        (f"{G}/NBIRTH/{N}", _p(0), "without an integer bdSeq"),
        ("spBv1.0/Plant1/NOPE/PLC-7", b"", "unknown message type"),
    ]:
        out = h.handle(topic, payload, NOW)
        assert not out.messages and why in out.dead[0], (topic, out.dead)
    assert h.handle("spBv1.0/STATE/aquavolt", b'{"online": true}', NOW) == Outcome()


def test_sessions_survive_a_restart() -> None:
    h = _host()
    _born(h)
    h2 = _host()
    h2.restore(h.snapshot())
    out = h2.handle(f"{G}/DDATA/{N}/Meter1", _p(40, Metric(alias=10, datatype=None, value=None)), NOW)
    assert out.gaps == 0 and not out.commands
    payload = encode_payload(Payload(timestamp=NOW, seq=41, metrics=(Metric(alias=10, datatype=DataType.Float,
                                                                             value=4.5),)))
    # on the wire, a data metric often has no datatype: the restored birth says how to read it
    msg = pb.Payload()
    msg.ParseFromString(payload)
    msg.metrics[0].ClearField("datatype")
    out = h2.handle(f"{G}/DDATA/{N}/Meter1", msg.SerializeToString(), NOW)
    [b] = _batches(out)
    assert [(r.point, r.value) for r in b.readings] == [("flow_lps", 4.5)] and not out.dead


def test_an_aquavolt_gateway_speaking_sparkplug_is_read_for_its_readings_only() -> None:
    """``northbound: sparkplug``: its readings come as DDATA (metric names = point names, and
    named bits), its status on aquavolt's own wire; with ``both`` the centre reads the wire."""
    import yaml

    from aquavolt.config import LoadedField
    from aquavolt.field import FieldConfig

    data = yaml.safe_load(FIELD.read_text())
    data["gateways"] = [{**data["gateways"][0], "northbound": "sparkplug", "sparkplug": {"group_id": "town"}},
                        {**data["gateways"][0], "id": "gw-2", "northbound": "both",
                         "devices": [{**data["gateways"][0]["devices"][0], "id": "em-2"}]}]
    fld = FieldConfig.model_validate(data)
    loaded = LoadedField(FIELD, fld, LOADED.profiles)
    h = SparkplugHost(fld, Topics("aquavolt/v1"), profiles=loaded.profiles)
    assert h.filters() == ["spBv1.0/town/#"] and list(h.nodes) == [("town", "gw-1")]
    out = h.handle("spBv1.0/town/NBIRTH/gw-1", _p(0, bd_seq_metric(7)), NOW)
    assert out.messages == [] and not out.dead
    out = h.handle("spBv1.0/town/DBIRTH/gw-1/em-1", _p(1, Metric(name="voltage_v", alias=1,
                                                               datatype=DataType.Float, value=231.5),
                                                        Metric(name="current_a", alias=2, datatype=DataType.Float,
                                                               is_null=True)), NOW)  # null: not read yet
    [(topic, b)] = out.messages
    assert topic == "aquavolt/v1/gw/gw-1/dev/em-1/data" and isinstance(b, Batch) and b.bd_seq == 7
    assert [(r.point, r.value) for r in b.readings] == [("voltage_v", 231.5)]
    out = h.handle("spBv1.0/town/DDATA/gw-1/em-1", _p(2, Metric(alias=1, datatype=DataType.Float, value=229.0)),
                   NOW)
    assert [(r.point, r.value) for b in _batches(out) for r in b.readings] == [("voltage_v", 229.0)]
    assert h.handle("spBv1.0/town/DDEATH/gw-1/em-1", _p(3), NOW).messages == []  # status: the wire's
