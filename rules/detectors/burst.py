"""Burst detection per zone: a step in the inlet flow with a pressure drop.

The zone inflow (inlets minus outlets, L/s) is averaged over ``slot_s`` (5 min) slots. Each
local time-of-day slot has a profile learnt from the previous days (mean and standard
deviation of that slot over up to ``history_weeks`` weeks; sigma floored at
``sigma_floor_fraction`` of the expected flow). The standardised residual feeds a one-sided
CUSUM, S = max(0, S + z - k), with k = 0.5 sigma and h = 5 sigma (domain practice: k about
0.5, h 4-5). A burst is raised when S > h, the flow is at least ``min_step_fraction`` above
the profile, and the zone pressure (pressure sensors, else the inlet meters' pressure) fell
by ``pressure_drop_m`` against its level before the step, all of it holding for
``min_duration_s`` (15 min: a demand peak passes, a burst flows until repaired). The step
must also be at least
``min_step_lps``: at night a small zone's flow varies by more than 20 % of itself. Without a
pressure level before the step and one after it (a logger not read yet, or silent) nothing
is raised: a flow step alone is a demand change as often as a burst. The alarm clears once
the flow stays within half the step threshold of the profile for ``clear_after_s``; slots
during a burst are not learnt. While a pump of the zone is in fault (its ``fault`` point),
the zone is not judged and its slots are not learnt (suppression by plant state): the
time-of-day profile describes the station with all its pumps, and a station running on its
standby changes the zone's inflow and pressure for as long as the fault lasts.
With 5-minute slots a clear step is raised at the end of its first or second slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aquavolt.config import LoadedField
from aquavolt.field import Zone
from aquavolt.rulecfg import BurstConfig
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import DAY_MS, LocalTime, number
from aquavolt.wire import Quality

BAR_TO_M = 10.197


@dataclass
class BurstState:
    last: dict[str, float] = field(default_factory=dict)
    pressure: dict[str, float] = field(default_factory=dict)
    slot_start: int | None = None
    flow_sum: float = 0.0
    flow_n: int = 0
    press_sum: float = 0.0
    press_n: int = 0
    profile: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # slot -> [(day, mean)]
    cusum: float = 0.0
    pressure_ref: float | None = None  # bar, level before the step
    active: bool = False
    calm_since: int | None = None
    started_ms: int | None = None
    suspect_since: int | None = None  # start of the slots that all looked like a burst
    pump_faults: dict[str, bool] = field(default_factory=dict)  # pump device -> in fault


class BurstRule:
    primed_by_history = True  # rules.history feeds it InfluxDB history at start

    def __init__(self, zone: Zone, cfg: BurstConfig, tz: str, pumps: frozenset[str] = frozenset()) -> None:
        self.zone = zone
        self.pumps = pumps
        self.cfg = cfg
        self.name = f"burst:{zone.id}"
        self.lt = LocalTime(tz)
        self.inlets = set(zone.inlet_meters)
        self.outlets = set(zone.outlet_meters)
        self.pressure_devices = set(zone.pressure_sensors) or set(zone.inlet_meters)
        self.slot_ms = cfg.slot_s * 1000

    @classmethod
    def for_field(cls, loaded: LoadedField) -> list[BurstRule]:
        f = loaded.field
        return [cls(z, f.rules.burst, f.timezone,
                    frozenset(p.device for p in f.water.pumps if p.zone == z.id)) for z in f.water.zones]

    def wants(self, device: str, point: str) -> bool:
        if point == "fault":
            return device in self.pumps
        if point == "flow_lps":
            return device in self.inlets or device in self.outlets
        return point == "pressure_bar" and device in self.pressure_devices

    def init(self) -> BurstState:
        return BurstState()

    def step(self, state: BurstState, sample: Sample) -> tuple[BurstState, list[Condition]]:
        if sample.point == "fault":
            if sample.quality is Quality.GOOD and isinstance(sample.value, bool | int):
                state.pump_faults[sample.device] = bool(sample.value)
            return state, self._roll(state, sample.ts_ms)
        v = number(sample)
        if v is None:
            return state, []
        out = self._roll(state, sample.ts_ms)
        if sample.point == "pressure_bar":
            state.pressure[sample.device] = v
            state.press_sum += sum(state.pressure.values()) / len(state.pressure)
            state.press_n += 1
            return state, out
        state.last[sample.device] = v
        if self.inlets <= state.last.keys():
            inflow = sum(state.last[m] for m in self.inlets)
            inflow -= sum(state.last.get(m, 0.0) for m in self.outlets)
            state.flow_sum += inflow
            state.flow_n += 1
        return state, out

    def tick(self, state: BurstState, now_ms: int) -> tuple[BurstState, list[Condition]]:
        return state, self._roll(state, now_ms)

    def _roll(self, state: BurstState, now_ms: int) -> list[Condition]:
        """Close every slot that ended at or before ``now_ms``."""
        slot = now_ms - now_ms % self.slot_ms
        if state.slot_start is None:
            state.slot_start = slot
            return []
        out: list[Condition] = []
        # at most one slot has data (the one open since the last sample): after it, every slot
        # up to ``slot`` is empty and judged by nothing, so it is jumped over, not walked (a
        # timestamp far ahead must cost one step, not one per 5 minutes: no loop bounded by data)
        while state.slot_start < slot:
            if not state.flow_n and not state.press_n:
                state.slot_start = slot
                break
            end = state.slot_start + self.slot_ms
            if state.flow_n:
                flow = state.flow_sum / state.flow_n
                # pressure is a level: a logger reporting by exception says nothing while it
                # holds, so a slot without a report keeps the last known level
                press = (state.press_sum / state.press_n if state.press_n
                         else sum(state.pressure.values()) / len(state.pressure) if state.pressure
                         else None)
                c = self._judge(state, state.slot_start, end, flow, press)
                if c is not None:
                    out.append(c)
            state.slot_start = end
            state.flow_sum = state.press_sum = 0.0
            state.flow_n = state.press_n = 0
        return out

    def _expected(self, state: BurstState, tod: int, day: int) -> tuple[float, float] | None:
        hist = [m for d, m in state.profile.get(tod, []) if d < day]
        if len(hist) < self.cfg.min_history_days:
            return None
        mean = sum(hist) / len(hist)
        var = sum((x - mean) ** 2 for x in hist) / (len(hist) - 1) if len(hist) > 1 else 0.0
        sigma = max(math.sqrt(var), self.cfg.sigma_floor_fraction * abs(mean), 1e-3)
        return mean, sigma

    def _learn(self, state: BurstState, tod: int, day: int, flow: float) -> None:
        hist = state.profile.setdefault(tod, [])
        hist.append((day, flow))
        del hist[: max(0, len(hist) - self.cfg.history_weeks * 7)]

    def _judge(self, state: BurstState, start: int, end: int, flow: float,
               press: float | None) -> Condition | None:
        cfg = self.cfg
        tod = self.lt.slot(start, cfg.slot_s)
        day = start // DAY_MS
        exp = self._expected(state, tod, day)
        if exp is None:
            self._learn(state, tod, day, flow)
            state.pressure_ref = press
            return None
        mean, sigma = exp
        if not state.active and any(state.pump_faults.values()):  # suppressed by plant state
            state.cusum = 0.0
            state.suspect_since = None
            if press is not None:
                state.pressure_ref = press
            return None
        step_min = max(cfg.min_step_fraction * max(mean, 1e-6), cfg.min_step_lps)
        residual = flow - mean
        if state.active:
            if residual < step_min / 2:
                state.calm_since = state.calm_since if state.calm_since is not None else start
                if end - state.calm_since >= cfg.clear_after_s * 1000:
                    state.active = False
                    state.cusum = 0.0
                    state.pressure_ref = press
                    dur = (end - (state.started_ms or end)) / 1000
                    return Condition(self.zone.id, "burst", False, end, cfg.priority,
                                     f"Inflow of {self.zone.id} back to its profile after {dur / 60:.0f} min",
                                     round(residual, 3), details={"duration_s": dur})
            else:
                state.calm_since = None
            return None
        state.cusum = max(0.0, state.cusum + residual / sigma - cfg.cusum_k_sigma)
        drop_m = (state.pressure_ref - press) * BAR_TO_M if press is not None and state.pressure_ref else None
        confirmed = drop_m is not None and drop_m >= cfg.pressure_drop_m
        suspect = state.cusum > cfg.cusum_h_sigma and residual >= step_min and confirmed
        if suspect and state.suspect_since is None:
            state.suspect_since = start
        elif not suspect:
            state.suspect_since = None
        began = state.suspect_since
        if suspect and began is not None and end - began >= cfg.min_duration_s * 1000:
            state.suspect_since = None
            state.active = True
            state.calm_since = None
            state.started_ms = began
            drop_txt = f", pressure down {drop_m:.1f} m"
            return Condition(
                self.zone.id, "burst", True, end, cfg.priority,
                f"Burst suspected in {self.zone.id}: inflow {flow:.2f} L/s vs {mean:.2f} L/s expected "
                f"(+{residual:.2f} L/s){drop_txt}", round(residual, 3),
                details={"flow_lps": round(flow, 3), "expected_lps": round(mean, 3),
                         "sigma_lps": round(sigma, 4), "step_lps": round(residual, 3),
                         "step_m3h": round(residual * 3.6, 3), "cusum": round(state.cusum, 2),
                         "pressure_drop_m": None if drop_m is None else round(drop_m, 2)})
        if residual < step_min / 2 and press is not None:
            state.pressure_ref = press  # the level before any step: flow clearly on its profile
        if state.cusum == 0.0:
            self._learn(state, tod, day, flow)
        return None

    def after_priming(self, state: BurstState) -> BurstState:
        """History trains the profile, it never alarms: start live judging from a clean CUSUM."""
        state.cusum = 0.0
        state.active = False
        state.calm_since = None
        state.started_ms = None
        state.suspect_since = None
        return state
