"""What is not a burst: a small zone's night-time wobble, and a flow step that no pressure
reading confirms. The same rule raises a real burst (the control case)."""

from __future__ import annotations

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.burst import BurstRule

DAY = 86_400_000
T0 = 1_780_012_800_000 - 1_780_012_800_000 % DAY  # a UTC midnight


def _run(step_lps: float, with_pressure: bool, drop_bar: float, pump_fault_at_s: int | None = None
         ) -> list[Condition]:
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
            if day == 4 and k == pump_fault_at_s:
                for pump in sorted(rule.pumps):
                    state, c = rule.step(state, Sample("gw", pump, "fault", True, ts))
                    out += c
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


def test_a_station_on_its_standby_pump_is_not_judged() -> None:
    """A pump of the zone in fault (tripped half an hour before the step): the profile was
    learnt with every pump available, so the zone is not judged while the fault lasts."""
    rule = next(r for r in BurstRule.for_field(load_field("examples/small-town.yaml")) if r.zone.id == "zone-a")
    assert rule.pumps  # zone A's pumping station
    assert _run(3.0, with_pressure=True, drop_bar=0.8, pump_fault_at_s=1800) == []


def test_small_night_wobble_is_not_a_burst() -> None:
    # +0.23 L/s on a 0.3 L/s night profile is +77 %, but not a burst
    assert _run(0.23, with_pressure=True, drop_bar=0.8) == []


def test_flow_step_without_pressure_readings_is_not_a_burst() -> None:
    assert _run(3.0, with_pressure=False, drop_bar=0.0) == []


def test_primed_from_hourly_history_then_raises_on_a_confirmed_step() -> None:
    """History (hourly values held over 5-minute slots, as the engine reads it) trains the
    profile but leaves no CUSUM behind; a pressure level reported once (report by
    exception) is the reference for the drop."""
    from aquavolt.rules.history import prime

    rule = next(r for r in BurstRule.for_field(load_field("examples/small-town.yaml"))
                if r.zone.id == "zone-a")
    inlet = next(iter(rule.inlets))
    sensor = next(iter(rule.pressure_devices))
    hist = []
    for k in range(7 * 288):
        ts = T0 + k * 300_000
        hour = (k // 12) % 24
        hist.append(Sample("gw", inlet, "flow_lps", 0.3 + 0.4 * (6 <= hour <= 22) + 0.05 * (hour % 3),
                           ts, historical=True))
    states = [rule.init()]
    prime([rule], states, hist)
    state = states[0]
    assert state.cusum == 0.0 and not state.active
    live0 = T0 + 7 * DAY
    out: list[Condition] = []
    state, c = rule.step(state, Sample("gw", sensor, "pressure_bar", 4.0, live0))
    out += c
    for k in range(0, 2 * 3600, 30):
        ts = live0 + k * 1000
        stepped = k >= 3600
        state, c = rule.step(state, Sample("gw", inlet, "flow_lps", 0.3 + (3.0 if stepped else 0.0), ts))
        out += c
        if k == 3600:
            state, c = rule.step(state, Sample("gw", sensor, "pressure_bar", 3.2, ts))
            out += c
    raised = [c for c in out if c.condition == "burst" and c.active]
    assert len(raised) == 1 and raised[0].ts_ms <= live0 + 3600_000 + 15 * 60_000
