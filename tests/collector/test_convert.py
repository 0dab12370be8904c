"""Payload to line protocol: the fast telemetry path agrees with the wire models on every
valid batch, and anything it does not recognise goes to the models, which name the fault."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aquavolt.errors import WireError
from aquavolt.wire import Batch, Quality, Reading, Topics, encode
from collector.convert import Kind, Router, telemetry_fast, telemetry_lines

TOPICS = Topics("aquavolt/v1")
ROUTER = Router(TOPICS)

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


def test_lax_but_valid_payload_goes_through_the_model() -> None:
    # the model accepts a numeric string for ts_ms (lax JSON mode): same points either way
    payload = json.dumps({**GOOD, "readings": [{"point": "p", "value": 2, "ts_ms": "7"}]}).encode()
    assert telemetry_fast(payload, "g", "d") is None
    assert ROUTER.lines(TOPICS.data("g", "d"), payload)[1] == [
        "telemetry,device=d,gateway=g,point=p value=2.0,quality=192i 7"]


def test_topics_outside_the_contract_are_refused() -> None:
    with pytest.raises(WireError):
        ROUTER.lines("aquavolt/v1/gw/g/dev/d/cmd", b"{}")
    with pytest.raises(WireError):
        ROUTER.lines("elsewhere/x", b"{}")
