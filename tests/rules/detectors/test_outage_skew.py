"""Devices and gateways do not sample at one instant: a feeder bay's reading stamped a few
seconds after a transformer's loss may still show the voltage from before it (a poll or
subscription cycle behind). The outage roll-up trusts a bay reading only ``bay_skew_s`` (15 s)
or more after the loss; closer than that, it waits for the bay (at most ``rollup_hold_s`` past
the debounce). That is a tolerance of the field, in event time; late delivery is not the
rule's business (the core's reorder buffer hands the readings over in event-time order)."""

from __future__ import annotations

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.outage import OutageRule
from aquavolt.rules.detectors.quality import PHASES

T = 1_780_000_000_000
BAY, TX_A = "ss1-feeder-1", "tx-1a-meter"


def _readings(bay_live_after_ms: int, bay_dead_after_ms: int) -> list[Sample]:
    """In event-time order: tx-1a dies at T; the bay's reading stamped ``bay_live_after_ms``
    later still shows 6350 V; the bay reads 0 V from ``bay_dead_after_ms`` after T. tx-1b's
    meter is not heard from."""
    out: list[Sample] = []

    def volts(dev: str, v: float, ts: int) -> None:
        out.extend(Sample("gw-substation", dev, p, v, ts) for p in PHASES)

    volts(BAY, 6350.0, T - 30_000)
    volts(TX_A, 230.0, T - 30_000)
    volts(TX_A, 0.0, T)
    volts(BAY, 6350.0, T + bay_live_after_ms)  # a cycle behind the loss
    for k in range(1, 8):
        volts(TX_A, 0.0, T + k * 30_000)
    for k in range(10):
        volts(BAY, 0.0, T + bay_dead_after_ms + k * 30_000)
    return sorted(out, key=lambda s: s.ts_ms)


def _raised(bay_live_after_ms: int, bay_dead_after_ms: int) -> list[Condition]:
    rule = OutageRule(load_field("examples/demo-town.yaml"))
    state = rule.init()
    conds: list[Condition] = []
    for s in _readings(bay_live_after_ms, bay_dead_after_ms):
        state, c = rule.step(state, s)
        conds += c
        state, c = rule.tick(state, s.ts_ms)
        conds += c
    return [c for c in conds if c.active]


def test_a_bay_reading_a_minute_after_the_loss_is_trusted() -> None:
    assets = [c.asset for c in _raised(60_000, 100_000)]
    assert assets[0] == "tx-1a"  # the bay said live a minute after: a transformer outage
    assert "feeder-1" in assets  # then the feeder's own 0 V


def test_a_bay_reading_within_the_skew_is_not_trusted_and_one_feeder_outage_is_raised() -> None:
    raised = _raised(10_000, 40_000)  # 10 s after the loss: within the 15 s skew
    assert {c.asset for c in raised} == {"feeder-1"}, raised
    assert raised[0].details["evidence"] == "voltage"
    assert raised[0].details["customers_affected"] > 0
