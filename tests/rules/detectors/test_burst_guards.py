"""What is not a burst: a small zone's night-time wobble, and a flow step that no pressure
reading confirms. The same rule raises a real burst (the control case)."""

from __future__ import annotations

from aquavolt.config import load_field
from rules.api import Condition, Sample
from rules.detectors.burst import BurstRule

DAY = 86_400_000
T0 = 1_780_012_800_000 - 1_780_012_800_000 % DAY  # a UTC midnight


def _run(step_lps: float, with_pressure: bool, drop_bar: float) -> list[Condition]:
    rule = next(r for r in BurstRule.for_field(load_field("examples/small-town.yaml"))
                if r.zone.id == "zone-a")
    state = rule.init()
    out: list[Condition] = []
    inlet = next(iter(rule.inlets))
    # 4 quiet nights (00:00-03:00, 0.3 L/s, 4.0 bar) build the profile; the step comes on
    # night 5 at 01:00.
    for day in range(5):
        for k in range(0, 3 * 3600, 60):
            ts = T0 + day * DAY + k * 1000
            stepped = day == 4 and k >= 3600
            flow = 0.3 + 0.01 * ((k // 60) % 3) + (step_lps if stepped else 0.0)
            state, c = rule.step(state, Sample("gw", inlet, "flow_lps", flow, ts))
            out += c
            if with_pressure:
                bar = 4.0 - (drop_bar if stepped else 0.0)
                state, c = rule.step(state, Sample("gw", inlet, "pressure_bar", bar, ts))
                out += c
        state, c = rule.tick(state, T0 + day * DAY + 3 * 3600 * 1000)
        out += c
    return [c for c in out if c.condition == "burst" and c.active]


def test_a_real_burst_is_raised() -> None:
    raised = _run(3.0, with_pressure=True, drop_bar=0.8)
    assert len(raised) == 1 and raised[0].asset == "zone-a"


def test_small_night_wobble_is_not_a_burst() -> None:
    # +0.23 L/s on a 0.3 L/s night profile is +77 %, but not a burst
    assert _run(0.23, with_pressure=True, drop_bar=0.8) == []


def test_flow_step_without_pressure_readings_is_not_a_burst() -> None:
    assert _run(3.0, with_pressure=False, drop_bar=0.0) == []
