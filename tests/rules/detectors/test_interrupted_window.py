"""A 10-minute window that holds an interruption is the outage's (IEC 61000-4-30 flags it):
a supply lost for two minutes inside a window drags its mean voltage 20 % down, which is no
voltage-band alarm. The same drop without an interruption (a real sag) is one (control)."""

from __future__ import annotations

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.quality import PHASES, PowerQualityRule

WIN_MS = 600_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % WIN_MS


def _band(volts_per_minute: list[float]) -> list[Condition]:
    rule = PowerQualityRule(load_field("examples/demo-town.yaml"))
    state = rule.init()
    out: list[Condition] = []
    for w in range(3):  # the window under test, between two normal ones
        for k in range(10):
            ts = T0 + w * WIN_MS + k * 60_000 + 1_000
            v = volts_per_minute[k] if w == 1 else 230.0
            for p in PHASES:
                state, c = rule.step(state, Sample("gw-substation", "tx-1a-meter", p, v, ts))
                out += c
    state, c = rule.tick(state, T0 + 4 * WIN_MS)
    return [x for x in out + c if x.condition == "voltage_band"]


def test_an_interrupted_window_is_not_a_voltage_band_alarm() -> None:
    assert _band([230.0] * 4 + [0.0, 0.0] + [230.0] * 4) == []


def test_the_same_mean_without_an_interruption_is_one() -> None:
    conds = _band([184.0] * 10)  # -20 % for the whole window
    assert [c.active for c in conds] == [True, False]
