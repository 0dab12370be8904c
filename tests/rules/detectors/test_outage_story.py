"""The life of one outage as the detector tells it: raised (classification so far
momentary), re-emitted once when it crosses ``sustained_after_s`` (IEEE 1366: 5 min) with the
crossing instant as its event time, and closed with its duration and final class. A bay
reading stamped inside the outage that reaches the rule after the restoration (a late poll)
tells nothing new: it must not open a second outage."""

from __future__ import annotations

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.outage import OutageRule
from aquavolt.rules.detectors.quality import PHASES

T = 1_780_000_000_000
BAY = "ss1-feeder-1"


def _volts(v: float, ts: int) -> list[Sample]:
    return [Sample("gw-substation", BAY, p, v, ts) for p in PHASES]


def _trip(minutes: float, late: list[Sample] | None = None, every_s: int = 10,
          lines: list[str] | None = None, until_ms: int = 0) -> list[Condition]:
    """feeder-1's bay reads 0 V from T for ``minutes``, every 10 s, then live for 10 minutes
    every ``every_s``; ``late`` samples are delivered right after the first live reading, with
    event time ticked on every 10 s."""
    rule = OutageRule(load_field("examples/demo-town.yaml"))
    state = rule.init()
    conds: list[Condition] = []
    samples = _volts(6350.0, T - 10_000)
    end = T + int(minutes * 60_000)
    samples += [s for t in range(T, end, 10_000) for s in _volts(0.0, t)]
    samples += _volts(6350.0, end)
    delivered = list(samples) + list(late or [])
    delivered += [s for t in range(end + every_s * 1000, end + 600_000, every_s * 1000)
                  for s in _volts(6350.0, t)]
    for s in delivered:
        state, c = rule.step(state, s)
        conds += c
        state, c = rule.tick(state, s.ts_ms)
        conds += c
        for t in range(s.ts_ms + 10_000, s.ts_ms + every_s * 1000, 10_000):
            state, c = rule.tick(state, t)
            conds += c
    if until_ms:
        state, c = rule.tick(state, until_ms)
        conds += c
    state, drained = rule.drain_lines(state)
    if lines is not None:
        lines += drained
    return [c for c in conds if c.asset == "feeder-1"]


def test_a_sustained_trip_tells_when_it_became_sustained_and_how_long_it_lasted() -> None:
    conds = _trip(25)
    assert [(c.active, c.details["classification"]) for c in conds] == [
        (True, "momentary"), (True, "sustained"), (False, "sustained")]
    raised, sustained, restored = conds
    assert raised.details["start_ms"] == T
    assert sustained.ts_ms == T + 300_000
    assert "interruption, sustained if it lasts 5 min" in raised.message
    assert "for 5 min, sustained" in sustained.message
    assert "after 1500 s (sustained interruption, 80 customers)" in restored.message
    assert restored.details["restored"] is True
    assert restored.details["duration_s"] == 1500.0
    assert restored.details["customers_affected"] == 80


def test_a_momentary_trip_is_closed_momentary() -> None:
    conds = _trip(2)
    assert [(c.active, c.details["classification"]) for c in conds] == [(True, "momentary"), (False, "momentary")]
    assert conds[-1].details["duration_s"] == 120.0


def test_a_late_bay_reading_after_restoration_does_not_raise_a_second_outage() -> None:
    late = _volts(0.0, T + 115_000)  # stamped inside the trip, delivered after the restoration
    conds = _trip(2, late=late, every_s=60)  # the bay's next reading a minute later
    assert [c.active for c in conds] == [True, False], [(c.active, c.ts_ms) for c in conds]


def test_each_restoration_writes_an_outage_point_and_each_day_the_feeders_indices() -> None:
    """IEEE 1366 per feeder and day: a 25-minute trip of feeder-1 (80 customers served, all
    interrupted) gives SAIDI 25 min, SAIFI 1, MAIFI 0; a 2-minute one MAIFI 1. Other feeders
    get their zeros. Written once the local day is over, never before."""
    lines: list[str] = []
    _trip(25, lines=lines)
    assert [ln for ln in lines if ln.startswith("outage,")] == [
        "outage,feeder=feeder-1 duration_s=1500.0,customers=80i,classification=\"sustained\","
        f"started_ms={T}i,kind=\"feeder\" {T + 1_500_000}"]
    assert not [ln for ln in lines if ln.startswith("reliability,")]  # the day is not over
    lines = []
    _trip(25, lines=lines, until_ms=T + 2 * 86_400_000)
    day = [ln for ln in lines if ln.startswith("reliability,feeder=feeder-1 ")]
    assert len(day) == 2  # the trip's day, then a clean one
    assert "saidi_min=25.0,saifi=1.0,maifi=0.0,customers_served=80i,sustained=1i,momentary=0i" in day[0]
    assert "saidi_min=0.0,saifi=0.0,maifi=0.0" in day[1]
    assert any(ln.startswith("reliability,feeder=feeder-2 saidi_min=0.0,") for ln in lines)
    lines = []
    _trip(2, lines=lines, until_ms=T + 86_400_000)
    day = [ln for ln in lines if ln.startswith("reliability,feeder=feeder-1 ")]
    assert "saidi_min=0.0,saifi=0.0,maifi=1.0," in day[0]


def test_the_story_on_the_wire_is_typed_and_strict() -> None:
    """AlarmEvent.outage round-trips; a string for a number or an unknown class is refused."""
    import orjson
    import pytest

    from aquavolt.errors import WireError
    from aquavolt.rules.alarms import AlarmManager
    from aquavolt.wire import AlarmEvent, OutageClass, decode, encode

    mgr = AlarmManager()
    (raised,) = mgr.apply(_trip(25)[0])
    assert raised.outage is not None and raised.outage.classification is OutageClass.MOMENTARY
    back = decode(encode(raised), AlarmEvent)
    assert back == raised
    doc = orjson.loads(encode(raised))
    for key, bad in (("customers_affected", "80"), ("classification", "long"), ("duration_s", True)):
        wrong = {**doc, "outage": {**doc["outage"], key: bad}}
        with pytest.raises(WireError, match=f"outage.{key}"):
            decode(orjson.dumps(wrong), AlarmEvent)
