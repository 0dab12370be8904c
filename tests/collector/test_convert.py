"""Payload to line protocol: the fast telemetry path agrees with the wire models on every
valid batch, and anything it does not recognise goes to the models, which name the fault."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aquavolt.collector.convert import Kind, Router, telemetry_fast, telemetry_lines
from aquavolt.errors import WireError
from aquavolt.wire import Batch, Quality, Reading, Topics, encode

TOPICS = Topics("aquavolt/v1")
ROUTER = Router(TOPICS, now_ms=lambda: 2**53)  # no timestamp of the contract is ahead of it
NOW_MS = 1_780_000_000_000
CLOCKED = Router(TOPICS, max_future_s=300, now_ms=lambda: NOW_MS)

values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**60), 2**60), st.booleans(),
    st.text(max_size=20),
)
readings = st.builds(
    Reading,
    point=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
    value=values,
    ts_ms=st.integers(0, 2**53 - 1),
    quality=st.sampled_from(list(Quality)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(readings, min_size=1, max_size=20))
def test_fast_path_equals_model_path(rs: list[Reading]) -> None:
    batch = Batch(gateway="gw-1", device="dev.2", seq=3, readings=rs)
    payload = encode(batch)
    fast = telemetry_fast(payload, "gw-1", "dev.2")
    assert fast is not None
    assert fast == telemetry_lines(batch)
    assert ROUTER.lines(TOPICS.data("gw-1", "dev.2"), payload) == (Kind.DATA, fast)


def test_null_values_and_line_shape() -> None:
    batch = Batch(gateway="g", device="d", seq=0, readings=[
        Reading(point="a", value=None, ts_ms=5, quality=Quality.BAD),
        Reading(point="b", value=True, ts_ms=6),
        Reading(point="c", value=3, ts_ms=7, quality=Quality.UNCERTAIN),
    ])
    lines = telemetry_fast(encode(batch), "g", "d")
    assert lines == [
        "telemetry,device=d,gateway=g,point=a quality=0i 5",
        "telemetry,device=d,gateway=g,point=b value=1.0,quality=192i 6",
        "telemetry,device=d,gateway=g,point=c value=3.0,quality=64i 7",
    ]
    assert lines == telemetry_lines(batch)


GOOD = {"v": 1, "gateway": "g", "device": "d", "seq": 1,
        "readings": [{"point": "p", "value": 1.0, "ts_ms": 1}]}


@pytest.mark.parametrize(("change", "reason"), [
    ({"seq": -1}, "seq"),
    ({"readings": []}, "readings"),
    ({"extra": 1}, "extra"),
    ({"gateway": "other"}, "topic names gateway"),
    ({"readings": [{"point": "P!", "value": 1.0, "ts_ms": 1}]}, "point"),
    ({"readings": [{"point": "p", "value": None, "ts_ms": 1}]}, "null value"),
    ({"readings": [{"point": "p", "value": 1.0, "ts_ms": -5}]}, "ts_ms"),
    ({"readings": [{"point": "p", "value": [1], "ts_ms": 1}]}, "value"),
    ({"readings": [{"point": "p", "value": 1.0}]}, "ts_ms"),
    ({"v": 2}, "v"),
])
def test_malformed_batches_are_refused_with_the_reason(change: dict[str, object], reason: str) -> None:
    payload = json.dumps({**GOOD, **change}).encode()
    assert telemetry_fast(payload, "g", "d") is None
    with pytest.raises(WireError, match=reason):
        ROUTER.lines(TOPICS.data("g", "d"), payload)


@pytest.mark.parametrize(("change", "reason"), [
    ({"seq": "4"}, "seq: Input should be a valid integer"),
    ({"bd_seq": True}, "bd_seq: Input should be a valid integer"),
    ({"historical": 1}, "historical: Input should be a valid boolean"),
    ({"readings": [{"point": "p", "value": 1.0, "ts_ms": 1}] * 10_001}, "readings: List should have at most"),
])
def test_strict_envelope_refuses_the_whole_batch(change: dict[str, object], reason: str) -> None:
    payload = json.dumps({**GOOD, **change}).encode()
    assert telemetry_fast(payload, "g", "d") is None
    with pytest.raises(WireError, match=reason):
        ROUTER.convert(TOPICS.data("g", "d"), payload)


def test_bad_readings_are_refused_one_by_one_and_the_others_kept() -> None:
    good = {"point": "ok", "value": 1.5, "ts_ms": 7}
    bad = [
        ({"point": "p", "value": 2, "ts_ms": "7"}, "readings.0.ts_ms: Input should be a valid integer"),
        ({"point": "p", "value": True, "ts_ms": True}, "readings.2.ts_ms: Input should be a valid integer"),
        ({"point": "p", "value": "x" * 1025, "ts_ms": 7}, "readings.4.value: String should have at most 1024"),
        ({"point": "p", "value": 1.0, "ts_ms": 7.0}, "readings.6.ts_ms: Input should be a valid integer"),
        ({"point": "p", "value": 10**400, "ts_ms": 7}, "readings.8.value: "),
    ]
    readings = []
    for r, _ in bad:
        readings += [r, good]
    payload = json.dumps({**GOOD, "readings": readings}).encode()
    assert telemetry_fast(payload, "g", "d") is None
    c = ROUTER.convert(TOPICS.data("g", "d"), payload)
    assert c.lines == ["telemetry,device=d,gateway=g,point=ok value=1.5,quality=192i 7"] * 5
    assert len(c.refused) == len(bad)
    for (_kind, why, _), (_, want) in zip(c.refused, bad, strict=True):
        assert why.startswith("Batch: " + want), why
    assert json.loads(c.refused[0][2]) == bad[0][0]  # the dead letter holds the reading


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_refused_with_the_reason(literal: bytes) -> None:
    payload = (b'{"v": 1, "gateway": "g", "device": "d", "seq": 1, "readings": ['
               b'{"point": "a", "value": ' + literal + b', "ts_ms": 7},'
               b'{"point": "b", "value": 2.5, "ts_ms": 7}]}')
    assert telemetry_fast(payload, "g", "d") is None
    c = ROUTER.convert(TOPICS.data("g", "d"), payload)
    assert c.lines == ["telemetry,device=d,gateway=g,point=b value=2.5,quality=192i 7"]
    assert [why for _kind, why, _ in c.refused] == ["Batch: readings.0.value: Input should be a finite number"]
    with pytest.raises(WireError, match="finite"):
        ROUTER.convert(TOPICS.health("g"), b'{"v": 1, "gateway": "g", "ts_ms": 7, "uptime_s": NaN, '
                       b'"buffer": {"depth": 0, "bytes": 0, "oldest_age_s": 0, "dropped": 0}}')


def test_oversize_payload_is_refused_before_parsing() -> None:
    payload = b'{"v": 1, "gateway": "g", "device": "d", "seq": 1, "readings": [' + b" " * 1_048_576
    with pytest.raises(WireError, match="1048576 bytes"):
        ROUTER.convert(TOPICS.data("g", "d"), payload)


def test_data_stamped_beyond_the_time_window_is_refused() -> None:
    ahead = NOW_MS + 301_000
    payload = json.dumps({**GOOD, "readings": [{"point": "a", "value": 1.0, "ts_ms": ahead},
                                               {"point": "b", "value": 2.0, "ts_ms": NOW_MS + 299_000},
                                               {"point": "c", "value": 3.0, "ts_ms": 2**53 - 1}]}).encode()
    assert telemetry_fast(payload, "g", "d", NOW_MS + 300_001) is None
    c = CLOCKED.convert(TOPICS.data("g", "d"), payload)
    assert c.lines == [f"telemetry,device=d,gateway=g,point=b value=2.0,quality=192i {NOW_MS + 299_000}"]
    assert [why for _kind, why, _ in c.refused] == [
        f"Batch: readings.0.ts_ms: {ahead} is 301 s ahead of the collector's clock (max_future_s 300)",
        f"Batch: readings.2.ts_ms: {2**53 - 1} is {(2**53 - 1 - NOW_MS) / 1000:.0f} s ahead of the "
        "collector's clock (max_future_s 300)"]
    health = (b'{"v": 1, "gateway": "g", "ts_ms": %d, "uptime_s": 1.0, "buffer": {"depth": 0, '
              b'"bytes": 0, "oldest_age_s": 0.0, "dropped": 0}}')
    assert CLOCKED.convert(TOPICS.health("g"), health % NOW_MS).lines
    with pytest.raises(WireError, match=r"Health: ts_ms: .* ahead of the collector's clock"):
        CLOCKED.convert(TOPICS.health("g"), health % (NOW_MS + 10 * 365 * 86_400_000))


def test_topics_outside_the_contract_are_refused() -> None:
    with pytest.raises(WireError):
        ROUTER.lines("aquavolt/v1/gw/g/dev/d/cmd", b"{}")
    with pytest.raises(WireError):
        ROUTER.lines("elsewhere/x", b"{}")


def test_a_string_for_a_point_born_numeric_is_refused() -> None:
    router = Router(TOPICS, now_ms=lambda: 2**53)
    birth = {"v": 1, "gateway": "g", "device": "d", "state": "online", "ts_ms": 5,
             "points": [{"name": "flow", "type": "float32"}, {"name": "serial", "type": "string"}]}
    payload = json.dumps({**GOOD, "readings": [{"point": "flow", "value": "24.8", "ts_ms": 7},
                                               {"point": "serial", "value": "A-7", "ts_ms": 7}]}).encode()
    assert len(router.convert(TOPICS.data("g", "d"), payload).lines) == 2  # types not known yet
    router.convert(TOPICS.device_status("g", "d"), json.dumps(birth).encode())
    c = router.convert(TOPICS.data("g", "d"), payload)
    assert c.lines == ['telemetry,device=d,gateway=g,point=serial text="A-7",quality=192i 7']
    assert [why for _kind, why, _ in c.refused] == [
        "Batch: readings.0.value: a string for point flow, a number in the device's birth"]
