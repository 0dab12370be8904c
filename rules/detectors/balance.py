"""Daily water balance per zone (IWA terms), written to InfluxDB measurement ``water_balance``.

For each local day: system input volume = sum over inlet meters of the ``volume_m3``
totaliser's increase between the two local midnights (minus outlet meters); consumption =
the same increase summed over the zone's customer meters; losses = input - consumption
(non-revenue water: real and apparent losses plus unbilled use). Totaliser values at
midnight are interpolated linearly between the reads either side of it. Losses are
reported per connection per day (domain practice), not as a percentage. A day is written
once event time (a tick) passes the next midnight by ``GRACE_MS`` (late 15-minute reads); a day
without every inlet's two midnight values is not written; customers without both values
are counted in ``customers_missing`` and their consumption is unknown (the loss figure
then overstates: read ``customers_missing`` with it). This rule raises no condition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from aquavolt.config import LoadedField
from aquavolt.field import Zone
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import LocalTime, number
from aquavolt.schema import WATER_BALANCE, line

GRACE_MS = 3_600_000
MAX_GAP_MIDNIGHTS = 7
"""A meter silent longer than this many midnights has values interpolated at the last ones
only (the older days had no read either side within a week: nothing to balance)."""


@dataclass
class BalanceState:
    last: dict[str, tuple[int, float]] = field(default_factory=dict)  # meter -> (ts, m3)
    at_midnight: dict[date, dict[str, float]] = field(default_factory=dict)  # day -> meter -> m3 at 00:00
    done_to: date | None = None
    lines: list[str] = field(default_factory=list)


class WaterBalanceRule:
    def __init__(self, zone: Zone, customer_meters: list[str], tz: str) -> None:
        self.zone = zone
        self.name = f"water_balance:{zone.id}"
        self.lt = LocalTime(tz)
        self.inlets = list(zone.inlet_meters)
        self.outlets = list(zone.outlet_meters)
        self.customers = list(customer_meters)
        self.all = set(self.inlets) | set(self.outlets) | set(self.customers)

    @classmethod
    def for_field(cls, loaded: LoadedField) -> list[WaterBalanceRule]:
        f = loaded.field
        return [cls(z, [c.water_meter for c in f.customers if c.zone == z.id and c.water_meter], f.timezone)
                for z in f.water.zones]

    def wants(self, device: str, point: str) -> bool:
        return point == "volume_m3" and device in self.all

    def init(self) -> BalanceState:
        return BalanceState()

    def step(self, state: BalanceState, sample: Sample) -> tuple[BalanceState, list[Condition]]:
        v = number(sample)
        if v is None:
            return state, []
        prev = state.last.get(sample.device)
        today = self.lt.day(sample.ts_ms)
        if self.lt.midnight(today) == sample.ts_ms:
            state.at_midnight.setdefault(today, {})[sample.device] = v
        if prev is not None and sample.ts_ms > prev[0]:
            t0, v0 = prev
            # the midnights crossed since the meter's last reading, at most the last
            # MAX_GAP_MIDNIGHTS of them: a timestamp far ahead costs a constant number of steps
            day = max(self.lt.day(t0) + timedelta(days=1), today - timedelta(days=MAX_GAP_MIDNIGHTS - 1))
            while (mid := self.lt.midnight(day)) <= sample.ts_ms:
                frac = (mid - t0) / (sample.ts_ms - t0)
                state.at_midnight.setdefault(day, {})[sample.device] = v0 + (v - v0) * frac
                day += timedelta(days=1)
        if prev is None or sample.ts_ms > prev[0]:
            state.last[sample.device] = (sample.ts_ms, v)
        return state, []

    def tick(self, state: BalanceState, now_ms: int) -> tuple[BalanceState, list[Condition]]:
        for day in sorted(state.at_midnight):
            nxt = day + timedelta(days=1)
            if now_ms < self.lt.midnight(nxt) + GRACE_MS or nxt not in state.at_midnight:
                if now_ms >= self.lt.midnight(nxt) + GRACE_MS + 86_400_000:
                    del state.at_midnight[day]  # the next midnight never came: give the day up
                continue
            self._close(state, day, state.at_midnight[day], state.at_midnight[nxt])
            del state.at_midnight[day]
        return state, []

    def _close(self, state: BalanceState, day: date, a: dict[str, float], b: dict[str, float]) -> None:
        def inc(m: str) -> float | None:
            if m in a and m in b and b[m] >= a[m]:
                return b[m] - a[m]
            return None

        ins = [inc(m) for m in self.inlets]
        outs = [inc(m) for m in self.outlets]
        if any(x is None for x in ins + outs):
            return
        system_input = sum(x for x in ins if x is not None) - sum(x for x in outs if x is not None)
        cons = [inc(m) for m in self.customers]
        known = [x for x in cons if x is not None]
        consumption = sum(known)
        losses = system_input - consumption
        conns = max(self.zone.connections, 1)
        fields: dict[str, float | int | bool | str] = {
            "input_m3": round(system_input, 4), "consumption_m3": round(consumption, 4),
            "losses_m3": round(losses, 4), "losses_l_per_conn_day": round(losses * 1000 / conns, 2),
            "customers_reporting": len(known), "customers_missing": len(cons) - len(known),
            "day": day.isoformat(),
        }
        state.lines.append(line(WATER_BALANCE, {"zone": self.zone.id}, fields, self.lt.midnight(day)))

    def drain_lines(self, state: BalanceState) -> tuple[BalanceState, list[str]]:
        out, state.lines = state.lines, []
        return state, out
