"""Minimum night flow (MNF) per zone (district metered area), UKWIR practice.

Each night, inside the local night window (02:00-04:00 by default), the zone's inflow
(sum of inlet meters minus outlet meters, ``flow_lps``) is averaged per 15-minute bucket
(a bucket without a sample carries the last value, as on-change reporting implies) and the
minimum rolling one-hour mean is the night's MNF. Legitimate night use is subtracted:

    domestic     = population x night_active_fraction x cistern_l  per hour
    non-domestic = non_domestic_lph per commercial/industrial connection not metered at night
    night users  = measured: mean flow_lph of customers flagged ``night_user`` in the window

giving the net night flow (NNF). The zone's baseline is the ``baseline_percentile``
(20th) percentile of the NNF of the ``baseline_nights`` (7) previous nights without alarm.
The alarm is on a rise: NNF above baseline + threshold on ``confirm_nights`` nights in a
row; it clears on the first night back below. The threshold scales with the zone, the
largest of:

    rise_alarm_m3h                          absolute floor (meter and night-use noise)
    rise_l_per_conn_h x connections / 1000  per service connection
    rise_m3_per_km_h x mains_length_km      per km of mains
    rise_alarm_fraction x baseline          a share of the zone's own net night flow
    rise_noise_sigmas x stdev(baseline nights' NNF)

(``details.threshold_basis`` names the one that applied). The estimated leak (m3/h) is the
rise.

Legitimate night use is partly estimated (residents, small non-domestic users): when the
estimate exceeds what the inlet measured, the NNF would be negative and the per-connection
figure meaningless. The NNF written (``nnf_m3h``, ``nnf_l_per_conn_h``, ``baseline_m3h``)
is then clamped at zero, ``nnf_clamped`` is true and ``legit_excess_m3h`` says by how much
the configured night use exceeds the measured flow; a warning naming the zone is logged and
counted (``NightFlowState.clamped_nights``). The rise is judged on the unclamped values
(an estimate that is a constant per zone cancels in a rise), so a leak in such a zone is
still seen from its first litre above the threshold. Each night yields a ``night_flow``
line.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from datetime import date, timedelta

from aquavolt.config import LoadedField
from aquavolt.field import CustomerType, Zone
from aquavolt.rulecfg import NightFlowConfig
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import LocalTime, number, percentile
from aquavolt.schema import NIGHT_FLOW, line

BUCKET_MS = 900_000

log = logging.getLogger(__name__)


@dataclass
class NightFlowState:
    last: dict[str, float] = field(default_factory=dict)  # meter -> last flow_lps
    buckets: dict[date, dict[int, list[float]]] = field(default_factory=dict)  # night -> bucket -> lps
    users: dict[date, list[float]] = field(default_factory=dict)  # night -> night users' total lph samples
    user_last: dict[str, float] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)  # NNF of baseline nights, m3/h
    risen: int = 0  # consecutive nights above the threshold
    active: bool = False
    lines: list[str] = field(default_factory=list)
    closed_to: date | None = None
    clamped_nights: int = 0  # nights whose estimated legitimate use exceeded the measured MNF


class NightFlowRule:
    primed_by_history = True  # rules.history feeds it InfluxDB history at start

    def after_priming(self, state: NightFlowState) -> NightFlowState:
        """History trains the baseline, it never alarms: no night counts as risen yet."""
        state.risen = 0
        state.active = False
        state.lines = []
        return state

    def __init__(self, zone: Zone, cfg: NightFlowConfig, tz: str, non_domestic: int,
                 night_user_meters: list[str]) -> None:
        self.zone = zone
        self.cfg = cfg
        self.name = f"night_flow:{zone.id}"
        self.lt = LocalTime(tz)
        self.inlets = set(zone.inlet_meters)
        self.outlets = set(zone.outlet_meters)
        self.night_users = set(night_user_meters)
        self.domestic_m3h = zone.population * cfg.night_active_fraction * cfg.cistern_l / 1000
        self.non_domestic_m3h = non_domestic * cfg.non_domestic_lph / 1000
        self.background_m3h = zone.mains_length_km * cfg.background_lph_per_km / 1000

    @classmethod
    def for_field(cls, loaded: LoadedField) -> list[NightFlowRule]:
        f = loaded.field
        out = []
        for z in f.water.zones:
            mine = [c for c in f.customers if c.zone == z.id]
            users = [c.water_meter for c in mine if c.night_user and c.water_meter]
            small = sum(1 for c in mine if c.type is not CustomerType.RESIDENTIAL and not c.night_user)
            out.append(cls(z, f.rules.night_flow, f.timezone, small, users))
        return out

    def wants(self, device: str, point: str) -> bool:
        if point == "flow_lps":
            return device in self.inlets or device in self.outlets
        return point == "flow_lph" and device in self.night_users

    def init(self) -> NightFlowState:
        return NightFlowState()

    def _night_of(self, ts_ms: int) -> date | None:
        s, e = self.cfg.window_start_h, self.cfg.window_end_h
        h = self.lt.hour(ts_ms)
        d = self.lt.day(ts_ms)
        if s < e:
            return d if s <= h < e else None
        if h >= s:
            return d + timedelta(days=1)
        return d if h < e else None

    def _window(self, night: date) -> tuple[int, int]:
        s, e = self.cfg.window_start_h, self.cfg.window_end_h
        start_day = night if s < e else night - timedelta(days=1)
        return self.lt.at(start_day, s), self.lt.at(night, e)

    def step(self, state: NightFlowState, sample: Sample) -> tuple[NightFlowState, list[Condition]]:
        v = number(sample)
        if v is None:
            return state, []
        night = self._night_of(sample.ts_ms)
        if sample.point == "flow_lph":
            state.user_last[sample.device] = v
            if night is not None:
                state.users.setdefault(night, []).append(sum(state.user_last.values()))
            return state, []
        state.last[sample.device] = v
        if night is None or not self.inlets <= state.last.keys():
            return state, []
        inflow = sum(state.last[m] for m in self.inlets) - sum(state.last.get(m, 0.0) for m in self.outlets)
        bucket = sample.ts_ms - sample.ts_ms % BUCKET_MS
        state.buckets.setdefault(night, {}).setdefault(bucket, []).append(inflow)
        return state, []

    def tick(self, state: NightFlowState, now_ms: int) -> tuple[NightFlowState, list[Condition]]:
        out: list[Condition] = []
        for night in sorted(state.buckets):
            start, end = self._window(night)
            if now_ms < end:
                continue
            buckets = state.buckets.pop(night)
            users = state.users.pop(night, [])
            c = self._close(state, night, start, end, buckets, users)
            if c is not None:
                out.append(c)
        for night in [n for n in state.users if self._window(n)[1] <= now_ms]:
            del state.users[night]
        return state, out

    def _mnf_m3h(self, start: int, end: int, buckets: dict[int, list[float]]) -> float | None:
        first = start - start % BUCKET_MS
        series: list[float] = []
        carry: float | None = None
        for b in range(first, end, BUCKET_MS):
            vals = buckets.get(b)
            if vals:
                carry = sum(vals) / len(vals)
            if carry is not None:
                series.append(carry)
            else:
                series = []
        if len(series) < 4:
            return None
        means = [sum(series[i:i + 4]) / 4 for i in range(len(series) - 3)]
        return min(means) * 3.6

    def threshold(self, baseline: float, history: list[float]) -> tuple[float, str]:
        """The rise that alarms in this zone, m3/h, and which term set it."""
        cfg = self.cfg
        noise = statistics.stdev(history) if len(history) >= 3 else 0.0
        terms = {
            "floor": cfg.rise_alarm_m3h,
            "per_connection": cfg.rise_l_per_conn_h * self.zone.connections / 1000,
            "per_km": cfg.rise_m3_per_km_h * self.zone.mains_length_km,
            "baseline_fraction": cfg.rise_alarm_fraction * max(baseline, 0.0),
            "noise": cfg.rise_noise_sigmas * noise,
        }
        basis = max(terms, key=lambda k: terms[k])
        return terms[basis], basis

    def _close(self, state: NightFlowState, night: date, start: int, end: int,
               buckets: dict[int, list[float]], users: list[float]) -> Condition | None:
        mnf = self._mnf_m3h(start, end, buckets)
        if mnf is None:
            return None
        metered_users = (sum(users) / len(users) / 1000) if users else 0.0
        legit = self.domestic_m3h + self.non_domestic_m3h + metered_users
        nnf = mnf - legit  # judged unclamped: a constant over-estimate cancels in the rise
        clamped = nnf < 0
        if clamped:
            state.clamped_nights += 1
            log.warning("night flow of %s on %s: the configured legitimate night use (%.3f m3/h) exceeds "
                        "the measured minimum night flow (%.3f m3/h) by %.3f m3/h; net night flow written "
                        "as 0 (nnf_clamped); %d such night(s)", self.zone.id, night.isoformat(), legit,
                        mnf, -nnf, state.clamped_nights)
        shown = max(nnf, 0.0)
        cfg = self.cfg
        baseline = percentile(state.history, cfg.baseline_percentile) if len(state.history) >= 3 else None
        fields: dict[str, float | int | bool | str] = {
            "mnf_m3h": round(mnf, 4), "legitimate_m3h": round(legit, 4), "nnf_m3h": round(shown, 4),
            "background_m3h": round(self.background_m3h, 4),
            "nnf_l_per_conn_h": round(shown * 1000 / max(self.zone.connections, 1), 3),
            "nnf_clamped": clamped, "legit_excess_m3h": round(max(-nnf, 0.0), 4),
        }
        cond: Condition | None = None
        if baseline is None:
            state.history.append(nnf)
        else:
            threshold, basis = self.threshold(baseline, state.history)
            rise = nnf - baseline
            fields.update(baseline_m3h=round(max(baseline, 0.0), 4), rise_m3h=round(rise, 4),
                          threshold_m3h=round(threshold, 4))
            details = {"night": night.isoformat(), "mnf_m3h": round(mnf, 3), "nnf_m3h": round(shown, 3),
                       "baseline_m3h": round(max(baseline, 0.0), 3), "legitimate_m3h": round(legit, 3),
                       "threshold_m3h": round(threshold, 3), "threshold_basis": basis,
                       "estimated_leak_m3h": round(rise, 3), "nnf_clamped": clamped}
            if rise > threshold:
                state.risen += 1
                if not state.active and state.risen >= cfg.confirm_nights:
                    state.active = True
                    cond = Condition(
                        self.zone.id, "night_flow_rise", True, end, cfg.priority,
                        f"Night flow of {self.zone.id} rose by {rise:.2f} m3/h over {cfg.confirm_nights} "
                        f"night(s) (threshold {threshold:.2f} m3/h, {basis}; net {shown:.2f} vs baseline "
                        f"{max(baseline, 0.0):.2f} m3/h): estimated leak {rise:.2f} m3/h",
                        round(rise, 3), details=details)
            else:
                state.risen = 0
                if state.active:
                    state.active = False
                    cond = Condition(self.zone.id, "night_flow_rise", False, end, cfg.priority,
                                     f"Night flow of {self.zone.id} back to baseline ({shown:.2f} m3/h)",
                                     round(rise, 3), details=details)
                state.history.append(nnf)
            state.history = state.history[-cfg.baseline_nights:]
        fields["alarm"] = state.active
        state.lines.append(line(NIGHT_FLOW, {"zone": self.zone.id}, fields, end))
        return cond

    def drain_lines(self, state: NightFlowState) -> tuple[NightFlowState, list[str]]:
        out, state.lines = state.lines, []
        return state, out
