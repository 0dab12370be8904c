"""Feeder bays report phase-to-neutral voltages (about 11000 / sqrt(3) V) while the field's
``feeder_nominal_voltage_v`` is line-to-line: the band is judged against nominal / sqrt(3)."""

from __future__ import annotations

import math

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.quality import PHASES, PowerQualityRule

T0 = 1_780_000_200_000 - 1_780_000_200_000 % 600_000


def _window(volts: float) -> list[Condition]:
    rule = PowerQualityRule(load_field("examples/demo-town.yaml"))
    state = rule.init()
    out: list[Condition] = []
    for k in range(20):  # 10 minutes of 30 s reads on the feeder-1 bay
        for p in PHASES:
            state, c = rule.step(state, Sample("gw-substation", "ss1-feeder-1", p, volts, T0 + k * 30_000))
            out += c
    state, c = rule.tick(state, T0 + 600_000)
    return out + c


def test_nominal_phase_voltage_is_inside_the_band() -> None:
    conds = _window(11000 / math.sqrt(3))
    assert [c for c in conds if c.condition == "voltage_band" and c.active] == []


def test_phase_overvoltage_is_judged_against_the_phase_nominal() -> None:
    conds = [c for c in _window(1.12 * 11000 / math.sqrt(3)) if c.condition == "voltage_band"]
    assert len(conds) == 1 and conds[0].active and conds[0].asset == "feeder-1"
    assert math.isclose(conds[0].details["nominal_v"], 11000 / math.sqrt(3))
    assert math.isclose(conds[0].details["deviation_pct"], 12.0, abs_tol=0.01)
