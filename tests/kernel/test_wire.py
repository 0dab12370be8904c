import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aquavolt.errors import WireError
from aquavolt.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    MAX_TEXT,
    MAX_TEXT_VALUE,
    AlarmEvent,
    Batch,
    Command,
    GatewayStatus,
    Health,
    Quality,
    Reading,
    Topics,
    decode,
    decode_batch,
    decode_batch_partial,
    encode,
)

idents = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
points = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.booleans(),
    st.text(max_size=20),
)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    quality = draw(st.sampled_from(list(Quality)))
    value = draw(values if quality is Quality.GOOD else st.one_of(st.none(), values))
    return Reading(point=draw(points), value=value, ts_ms=draw(st.integers(0, 2**53 - 1)),
                   quality=quality)


batches = st.builds(
    Batch,
    gateway=idents,
    device=idents,
    seq=st.integers(0, 2**63),
    bd_seq=st.integers(0, 2**31),
    historical=st.booleans(),
    readings=st.lists(readings(), min_size=1, max_size=20),
)


@given(batch=batches)
def test_batch_round_trips(batch: Batch) -> None:
    back = decode_batch(encode(batch))
    assert back == batch
    for a, b in zip(back.readings, batch.readings, strict=True):
        assert type(a.value) is type(b.value)  # a bool stays a bool, an int an int


@given(st.builds(GatewayStatus, gateway=idents, state=st.sampled_from(["online", "offline"]),
                 bd_seq=st.integers(0, 1000), ts_ms=st.integers(0, 2**40),
                 devices=st.lists(idents, max_size=5)))
def test_gateway_status_round_trips(msg: GatewayStatus) -> None:
    assert decode(encode(msg), GatewayStatus) == msg


def test_command_and_alarm_round_trip() -> None:
    cmd = Command(id="c-1", point="speed_setpoint_pct", value=75.5, ts_ms=1, operator="amina")
    assert decode(encode(cmd), Command) == cmd
    ev = AlarmEvent(alarm_id="pump-1/fault", asset="pump-1", condition="fault", state="unack",
                    transition="raised", priority="high", ts_ms=5, value=True)
    assert decode(encode(ev), AlarmEvent) == ev


GOOD = {"gateway": "gw1", "device": "d1", "seq": 1,
        "readings": [{"point": "flow_lps", "value": 1.5, "ts_ms": 1000}]}


def _with(**changes: object) -> bytes:
    doc = orjson.loads(orjson.dumps(GOOD))
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        if value is ...:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "Invalid JSON"),
        (b"[]", "Input should be an object"),
        (_with(seq=-1), "seq: Input should be greater than or equal to 0"),
        (_with(seq=...), "seq: Field required"),
        (_with(readings=[]), "readings: List should have at least 1 item"),
        (_with(gateway="a/b"), "gateway: String should match pattern"),
        (_with(readings__0__point="Flow Rate"), "readings.0.point: String should match"),
        (_with(readings__0__ts_ms="yesterday"), "readings.0.ts_ms: Input should be a valid integer"),
        (_with(readings__0__value=None), "null value cannot have good quality"),
        (_with(readings__0__quality="excellent"), "readings.0.quality: Input should be"),
        (_with(extra_key=1), "extra_key: Extra inputs are not permitted"),
        (_with(v=2), "v: Input should be 1"),
    ],
)
def test_malformed_payloads_rejected_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode_batch(payload)
    assert reason in str(info.value)
    assert str(info.value).startswith("Batch: ")


def test_good_payload_sample_decodes() -> None:
    b = decode_batch(orjson.dumps(GOOD))
    assert b.readings[0].quality is Quality.GOOD and b.historical is False


def test_topics_build_and_parse() -> None:
    t = Topics("aquavolt/v1")
    assert t.data("gw1", "pump-1") == "aquavolt/v1/gw/gw1/dev/pump-1/data"
    assert t.parse(t.data("gw1", "pump-1")) == ("data", "gw1", "pump-1")
    assert t.parse(t.gateway_status("gw1")) == ("status", "gw1", None)
    assert t.parse(t.reply("g", "d")) == ("reply", "g", "d")
    with pytest.raises(WireError, match="does not follow"):
        t.parse("aquavolt/v1/gw/gw1/dev/pump-1/other")
    with pytest.raises(WireError, match="is not under"):
        t.parse("elsewhere/gw/x/status")
    with pytest.raises(ValueError):
        Topics("bad/#")


READING = b'{"point": "p", "value": 1.5, "ts_ms": 7}'


def _batch(readings: bytes = READING, **envelope: bytes) -> bytes:
    head = {"v": b"1", "gateway": b'"g"', "device": b'"d"', "seq": b"1", **envelope}
    return (b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in head.items())
            + b', "readings": [' + readings + b"]}")


@pytest.mark.parametrize(("payload", "reason"), [
    (_batch(seq=b'"4"'), "Batch: seq: Input should be a valid integer"),
    (_batch(seq=b"true"), "Batch: seq: Input should be a valid integer"),
    (_batch(seq=b"4.0"), "Batch: seq: Input should be a valid integer"),
    (_batch(historical=b'"false"'), "Batch: historical: Input should be a valid boolean"),
    (_batch(historical=b"0"), "Batch: historical: Input should be a valid boolean"),
    (_batch(b'{"point": "p", "value": 1.5, "ts_ms": "1780000000000"}'),
     "Batch: readings.0.ts_ms: Input should be a valid integer"),
    (_batch(b'{"point": "p", "value": NaN, "ts_ms": 7}'), "Batch: readings.0.value: Input should be a finite number"),
    (_batch(b'{"point": "p", "value": Infinity, "ts_ms": 7}'), "Batch: readings.0.value: Input should be a finite"),
    (_batch(b'{"point": "p", "value": -Infinity, "ts_ms": 7}'), "Batch: readings.0.value: Input should be a finite"),
    (_batch(b'{"point": "p", "value": 1e999, "ts_ms": 7}'), "Batch: readings.0.value: Input should be a finite"),
    (_batch(b'{"point": "p", "value": "%s", "ts_ms": 7}' % (b"x" * (MAX_TEXT_VALUE + 1))),
     "Batch: readings.0.value: String should have at most 1024 characters"),
    (_batch(b", ".join([READING] * (MAX_READINGS + 1))), "Batch: readings: List should have at most 10000"),
    (b'{"v": 1, "gateway": "g", "ts_ms": 7, "uptime_s": NaN, "buffer": {"depth": 0, "bytes": 0, '
     b'"oldest_age_s": 0, "dropped": 0}}', "Health: uptime_s: Input should be a finite number"),
    (b'{"v": 1, "gateway": "g", "ts_ms": 7, "uptime_s": 1, "buffer": {"depth": "0", "bytes": 0, '
     b'"oldest_age_s": 0, "dropped": 0}}', "Health: buffer.depth: Input should be a valid integer"),
    (b'{"v": 1, "gateway": "g", "state": "online", "bd_seq": 0, "ts_ms": 7, "reason": "%s"}'
     % (b"r" * (MAX_TEXT + 1)), "GatewayStatus: reason: String should have at most 1024"),
    (b'{"v": 1, "id": "c1", "point": "p", "value": "24.8", "ts_ms": 7}', "Command: value: Input should be"),
    (b'{"v": 1, "id": "c1", "point": "p", "value": NaN, "ts_ms": 7}', "Command: value: Input should be a finite"),
])
def test_strict_models_refuse_coercion_non_finite_numbers_and_oversize(payload: bytes, reason: str) -> None:
    model = Health if b'"uptime_s"' in payload else GatewayStatus if b'"state"' in payload \
        else Command if b'"id"' in payload else Batch
    with pytest.raises(WireError) as err:
        decode(payload, model)
    assert str(err.value).startswith(reason), str(err.value)


def test_oversize_payload_refused_before_parsing() -> None:
    with pytest.raises(WireError, match=f"larger than the limit of {MAX_PAYLOAD_BYTES} bytes"):
        decode(b"[" * (MAX_PAYLOAD_BYTES + 1), Batch)


def test_partial_batch_keeps_the_good_readings_and_names_the_bad_by_index() -> None:
    payload = _batch(b", ".join([READING, b'{"point": "q", "value": NaN, "ts_ms": 7}', READING,
                                 b'{"point": "q", "value": 1, "ts_ms": "7"}']))
    batch, bad = decode_batch_partial(payload)
    assert [r.point for r in batch.readings] == ["p", "p"]
    assert [(i, why) for i, why, _raw in bad] == [
        (1, "Batch: readings.1.value: Input should be a finite number"),
        (3, "Batch: readings.3.ts_ms: Input should be a valid integer")]
    with pytest.raises(WireError, match="Batch: seq"):  # a bad envelope: nothing kept
        decode_batch_partial(_batch(READING, seq=b'"1"'))
    with pytest.raises(WireError, match="no valid reading"):
        decode_batch_partial(_batch(b'{"point": "q", "value": NaN, "ts_ms": 7}'))


def test_what_encode_writes_the_strict_decode_reads() -> None:
    # the edge's own encoding: enums as their values, bools and ints as themselves
    edge_json = orjson.dumps({"v": 1, "gateway": "g", "device": "d", "seq": 3, "bd_seq": 1,
                              "historical": False, "readings": [
                                  {"point": "a", "value": 2, "ts_ms": 7, "quality": Quality.GOOD},
                                  {"point": "b", "value": True, "ts_ms": 7, "quality": "good"},
                                  {"point": "c", "value": None, "ts_ms": 7, "quality": Quality.BAD},
                                  {"point": "d", "value": "x" * MAX_TEXT_VALUE, "ts_ms": 7,
                                   "quality": "good"}]})
    batch = decode_batch(edge_json)
    assert [type(r.value) for r in batch.readings] == [int, bool, type(None), str]
    assert decode_batch(encode(batch)) == batch
    with pytest.raises(ValueError, match="finite"):  # nor can a sender build a NaN reading
        Reading(point="p", value=float("nan"), ts_ms=7)
