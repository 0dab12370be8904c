"""Readings of different gateways taken at one instant do not reach the engine in order: a
feeder bay's reading stamped a minute after a transformer's loss may still show the voltage
from before it (a poll or subscription cycle behind). At 1x a minute is far beyond that lag and
the bay's reading is trusted; on a clock running 600 times faster it is a tenth of a wall
second, and the outage roll-up keeps waiting for the bay (``OutageConfig.bay_skew_s`` plus half
a wall second of transport lag, scaled by the acceleration)."""

from __future__ import annotations

from aquavolt.config import load_field
from rules.api import Condition, Sample
from rules.detectors.outage import OutageRule
from rules.detectors.quality import PHASES

T = 1_780_000_000_000
BAY, TX_A, TX_B = "ss1-feeder-1", "tx-1a-meter", "tx-1b-meter"


def _readings() -> list[Sample]:
    """In arrival order: tx-1a dies at T; the bay's reading stamped T+60 s still shows 6350 V;
    the bay's 0 V (stamped T+100 s) arrives later. tx-1b's meter is not heard from."""
    out: list[Sample] = []

    def volts(dev: str, gw: str, v: float, ts: int) -> None:
        out.extend(Sample(gw, dev, p, v, ts) for p in PHASES)

    volts(BAY, "gw-substation", 6350.0, T - 30_000)
    volts(TX_A, "gw-substation", 230.0, T - 30_000)
    volts(TX_A, "gw-substation", 0.0, T)
    volts(BAY, "gw-substation", 6350.0, T + 60_000)  # a cycle behind the loss
    for k in range(1, 8):
        volts(TX_A, "gw-substation", 0.0, T + k * 30_000)
    for k in range(10):
        volts(BAY, "gw-substation", 0.0, T + 100_000 + k * 30_000)
    return out


def _raised(time_scale: float) -> list[Condition]:
    rule = OutageRule(load_field("examples/demo-town.yaml"), time_scale)
    state = rule.init()
    conds: list[Condition] = []
    for s in _readings():
        state, c = rule.step(state, s)
        conds += c
        state, c = rule.tick(state, s.ts_ms)
        conds += c
    return [c for c in conds if c.active]


def test_at_1x_the_bay_reading_a_minute_later_is_trusted() -> None:
    assets = [c.asset for c in _raised(1.0)]
    assert assets[0] == "tx-1a"  # the bay said live a minute after: a transformer outage
    assert "feeder-1" in assets  # then the feeder's own 0 V


def test_at_600x_the_roll_up_waits_for_the_bay_and_raises_one_feeder_outage() -> None:
    raised = _raised(600.0)
    assert {c.asset for c in raised} == {"feeder-1"}, raised
    assert raised[0].details["evidence"] == "voltage"
    assert raised[0].details["customers_affected"] > 0
