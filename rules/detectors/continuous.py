"""Continuous flow behind a customer's water meter (a leak on the customer's side).

Practice of AMI vendors and utilities (../../docs/detection.md): a leak when every hour of
the last 24 h recorded at least a small volume (4 L, about one US gallon); re-evaluated on
every hour completed; cleared as soon as one hour drops below the threshold; leak rate =
the smallest hourly volume.

A household's quiet hour moves from night to night (01-02 one night, 02-03 the next): a
24-hour window can then fit between two quiet hours although the household is quiet every
night. So the rule also asks that no hour was quiet since the local midnight before the
window began: at least one whole local day (``tz``, the field's time zone) went by without
a quiet hour. A household quiet at some hour of every day never alarms; a leak is raised
24 h after it starts when it starts at local midnight, and at the latest at the second
local midnight after it starts (under 48 h). Hourly volumes come from the ``volume_m3`` totaliser: each
interval between two good reads is spread over the hours it covers. An hour is known only
when good reads cover it entirely with no gap longer than ``max_read_gap_s``: hours with
missing, bad or uncertain (estimated) reads neither raise nor clear. Customers flagged
``continuous_flow_expected`` (factories, cooling towers) are not watched at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aquavolt.config import LoadedField
from aquavolt.field import Customer
from aquavolt.rulecfg import ContinuousFlowConfig, Priority
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import HOUR_MS, LocalTime, number

POINT = "volume_m3"


@dataclass
class _Meter:
    last_ts: int | None = None
    last_m3: float | None = None
    hours: dict[int, float] = field(default_factory=dict)  # hour start ms -> litres so far
    covered: dict[int, int] = field(default_factory=dict)  # hour start ms -> ms covered
    active: bool = False
    evaluated_to: int = 0  # hours before this start ms were judged
    last_quiet: int | None = None  # start ms of the latest known hour below the threshold


@dataclass
class ContinuousFlowState:
    meters: dict[str, _Meter] = field(default_factory=dict)


class ContinuousFlowRule:
    name = "continuous_flow"

    def __init__(self, customers: list[Customer], cfg: ContinuousFlowConfig, tz: str = "UTC") -> None:
        self.cfg = cfg
        self.lt = LocalTime(tz)
        self.max_gap_ms = int(cfg.max_read_gap_s * 1000)
        self.by_meter = {c.water_meter: c for c in customers
                         if c.water_meter and not c.continuous_flow_expected}

    @classmethod
    def from_field(cls, loaded: LoadedField) -> ContinuousFlowRule:
        return cls(loaded.field.customers, loaded.field.rules.continuous_flow, loaded.field.timezone)

    def wants(self, device: str, point: str) -> bool:
        return point == POINT and device in self.by_meter

    def init(self) -> ContinuousFlowState:
        return ContinuousFlowState()

    def step(self, state: ContinuousFlowState, sample: Sample) -> tuple[ContinuousFlowState, list[Condition]]:
        if not self.wants(sample.device, sample.point):
            return state, []
        m = state.meters.setdefault(sample.device, _Meter())
        v = number(sample)
        if v is None:
            m.last_ts = m.last_m3 = None  # a bad or estimated read: the intervals around it stay unknown
            return state, []
        if (m.last_ts is not None and m.last_m3 is not None and sample.ts_ms > m.last_ts
                and sample.ts_ms - m.last_ts <= self.max_gap_ms and v >= m.last_m3):
            self._spread(m, m.last_ts, sample.ts_ms, (v - m.last_m3) * 1000.0)
        if m.last_ts is None or sample.ts_ms > m.last_ts:
            m.last_ts, m.last_m3 = sample.ts_ms, v
        return state, self._judge(sample.device, m, sample.ts_ms)

    def tick(self, state: ContinuousFlowState, now_ms: int) -> tuple[ContinuousFlowState, list[Condition]]:
        return state, []  # raising and clearing both need reads

    @staticmethod
    def _spread(m: _Meter, t0: int, t1: int, litres: float) -> None:
        span = t1 - t0
        h = t0 - t0 % HOUR_MS
        while h < t1:
            a, b = max(t0, h), min(t1, h + HOUR_MS)
            if b > a:
                m.hours[h] = m.hours.get(h, 0.0) + litres * (b - a) / span
                m.covered[h] = m.covered.get(h, 0) + (b - a)
            h += HOUR_MS

    def _judge(self, device: str, m: _Meter, now_ms: int) -> list[Condition]:
        """Judge every hour completed (a read at or after its end) not judged yet."""
        out: list[Condition] = []
        done_to = now_ms - now_ms % HOUR_MS  # hours starting before this are complete
        if 0 < m.evaluated_to >= done_to:
            return []  # no hour completed since the last judgement (most reads)
        if m.evaluated_to == 0:
            m.evaluated_to = min(m.hours) if m.hours else done_to
        n = self.cfg.hours
        # only the fully covered hours are judged (an unknown hour says nothing): they are
        # looked up, not walked to, so a read far ahead costs no loop per hour of the gap
        start = m.evaluated_to
        m.evaluated_to = max(start, done_to)
        for h in sorted(k for k, c in m.covered.items() if start <= k < done_to and c >= HOUR_MS):
            if m.hours[h] < self.cfg.min_hourly_l:
                m.last_quiet = h
                if m.active:
                    m.active = False
                    out.append(self._cond(device, False, h + HOUR_MS, m.hours[h], quiet=True))
                continue
            window = [h - i * HOUR_MS for i in range(n)]
            if m.active or any(m.covered.get(w, 0) < HOUR_MS for w in window):
                continue
            day_start = self.lt.midnight(self.lt.day(window[-1]))
            if m.last_quiet is not None and m.last_quiet >= day_start:
                continue  # quiet earlier that day: the household's quiet hour moved, not a leak
            if all(m.hours[w] >= self.cfg.min_hourly_l for w in window):
                m.active = True
                out.append(self._cond(device, True, h + HOUR_MS, min(m.hours[w] for w in window)))
        keep = m.evaluated_to - (n + 1) * HOUR_MS
        for k in [k for k in m.hours if k < keep]:
            del m.hours[k]
            m.covered.pop(k, None)
        return out

    def _cond(self, device: str, active: bool, ts: int, litres: float, quiet: bool = False) -> Condition:
        c = self.by_meter[device]
        if active:
            msg = (f"Continuous flow behind meter {device} for {self.cfg.hours} h: at least "
                   f"{litres:.0f} L every hour (leak rate about {litres:.0f} L/h)")
        else:
            msg = f"Flow behind meter {device} stopped: {litres:.1f} L in the last hour"
        return Condition(
            asset=c.id, condition="continuous_flow", active=active, ts_ms=ts,
            priority=Priority.LOW, message=msg, value=round(litres, 1), audience="customer",
            customer=c.id,
            details={"meter": device, "leak_rate_lph" if active else "quiet_hour_l": round(litres, 1),
                     "hours": self.cfg.hours, "threshold_l": self.cfg.min_hourly_l},
        )
