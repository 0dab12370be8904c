"""Voltage quality (EN 50160), phase imbalance and transformer overload, on 10-minute means.

Per transformer (LV meter, nominal ``electricity.nominal_voltage_v``) and per feeder
(feeder bay, phase-to-neutral nominal ``feeder_nominal_voltage_v`` / sqrt(3): the field gives
the line-to-line voltage, the bay reports phase voltages), each phase voltage is averaged over
aligned ``window_s`` (600 s) windows, as EN 50160 does with 10-minute mean RMS values.

- ``voltage_band``: a phase mean outside nominal +/- ``band_fraction`` (10 %); priority high
  beyond the hard limits (+10 % / -``hard_low_fraction`` 15 %). One condition per asset for
  all phases; cleared by the first window with every phase inside the band.
- ``voltage_week`` (EN 50160's weekly statistic): over the last 7 days, 95 % of the
  10-minute means must lie in the band; more than ``week_outside_pct`` (5 %) outside raises
  it (priority medium), judged once ``week_min_coverage`` (90 %) of the week's windows have a
  mean, then once a day (the first window of each UTC day), cleared when the share is back
  within the limit.
- ``imbalance``: 100 x max deviation from the phases' mean / mean above ``imbalance_pct`` (2 %).
- ``overload`` (transformers): the larger of the LV meter's apparent power and the sum of
  the customer meters' latest power, kVA = sqrt(kW^2 + kVAr^2) (power factor
  ``power_factor_default`` 0.95 when reactive power is missing), above
  ``overload_fraction`` x nameplate kVA.

A window that holds an interruption (a phase reading below 1 % of nominal) is flagged, as
IEC 61000-4-30 flags aggregation intervals with an interruption: it is the outage's, judged
neither for the band nor for imbalance, and left out of the weekly statistic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from aquavolt.config import LoadedField
from aquavolt.rulecfg import Priority, VoltageQualityConfig
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import feeder_phase_nominal_v, number

PHASES = ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
TX_POWER = ("total_power_w", "total_reactive_power_var", "active_power_kw", "reactive_power_kvar")


@dataclass
class _Window:
    start: int | None = None
    sums: dict[str, list[float]] = field(default_factory=dict)  # point -> [sum, n]
    flagged: bool = False  # an interruption inside: the outage's window


@dataclass
class QualityState:
    windows: dict[str, _Window] = field(default_factory=dict)
    meter_kw: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # meter -> (kW, kvar)
    active: dict[str, bool] = field(default_factory=dict)  # "asset/condition" -> active
    weeks: dict[str, deque[tuple[int, bool]]] = field(default_factory=dict)  # asset -> (end, outside)
    week_judged: dict[str, int] = field(default_factory=dict)  # asset -> UTC day last judged


@dataclass(frozen=True)
class _Asset:
    id: str
    device: str
    nominal_v: float
    rating_kva: float | None
    meters: tuple[str, ...]


class PowerQualityRule:
    name = "power_quality"

    def __init__(self, loaded: LoadedField) -> None:
        f = loaded.field
        self.cfg: VoltageQualityConfig = f.rules.voltage
        self.by_device: dict[str, _Asset] = {}
        self.meter_asset: dict[str, str] = {}
        for _s, _fd, t in f.transformers.values():
            meters = tuple(c.electricity_meter for c in f.customers
                           if c.transformer == t.id and c.electricity_meter)
            for m in meters:
                self.meter_asset[m] = t.device or ""
            if t.device:
                self.by_device[t.device] = _Asset(t.id, t.device, f.electricity.nominal_voltage_v,
                                                  t.rating_kva, meters)
        for _s, fd in f.feeders.values():
            if fd.device:
                phase_v = feeder_phase_nominal_v(f.electricity.feeder_nominal_voltage_v)
                self.by_device[fd.device] = _Asset(fd.id, fd.device, phase_v,
                                                   None, ())
        self.win_ms = self.cfg.window_s * 1000
        self.week_windows = WEEK_MS // self.win_ms

    def wants(self, device: str, point: str) -> bool:
        if device in self.by_device:
            return point in PHASES or point in TX_POWER
        return device in self.meter_asset and point in ("power_w", "reactive_power_var")

    def init(self) -> QualityState:
        return QualityState()

    def step(self, state: QualityState, sample: Sample) -> tuple[QualityState, list[Condition]]:
        out = self._roll(state, sample.ts_ms)
        v = number(sample)
        if v is None:
            return state, out
        if sample.device in self.meter_asset:
            kw, kvar = state.meter_kw.get(sample.device, (0.0, None))
            if sample.point == "power_w":
                kw = v / 1000
            else:
                kvar = v / 1000
            state.meter_kw[sample.device] = (kw, kvar)
            return state, out
        w = state.windows.setdefault(sample.device, _Window())
        if w.start is None:
            w.start = sample.ts_ms - sample.ts_ms % self.win_ms
        acc = w.sums.setdefault(sample.point, [0.0, 0.0])
        acc[0] += v
        acc[1] += 1
        if sample.point in PHASES and v < 0.01 * self.by_device[sample.device].nominal_v:
            w.flagged = True
        return state, out

    def tick(self, state: QualityState, now_ms: int) -> tuple[QualityState, list[Condition]]:
        return state, self._roll(state, now_ms)

    def _roll(self, state: QualityState, now_ms: int) -> list[Condition]:
        out: list[Condition] = []
        for dev, w in state.windows.items():
            if w.start is None or now_ms < w.start + self.win_ms:
                continue
            end = w.start + self.win_ms
            means = {p: s / n for p, (s, n) in w.sums.items() if n}
            out += self._judge(state, self.by_device[dev], means, end, w.flagged)
            w.start = now_ms - now_ms % self.win_ms
            w.sums = {}
            w.flagged = False
        return out

    def _set(self, state: QualityState, asset: str, cond: str, active: bool, ts: int, prio: Priority,
             msg: str, value: float, details: Mapping[str, object]) -> list[Condition]:
        key = f"{asset}/{cond}"
        if state.active.get(key, False) == active:
            return []
        state.active[key] = active
        return [Condition(asset, cond, active, ts, prio, msg, round(value, 3), details=dict(details))]

    def _judge(self, state: QualityState, a: _Asset, means: dict[str, float], ts: int,
               flagged: bool = False) -> list[Condition]:
        cfg = self.cfg
        out: list[Condition] = []
        phases = {p: m for p, m in means.items() if p in PHASES}
        if phases and not flagged and max(phases.values()) >= 0.01 * a.nominal_v:
            worst_p = max(phases, key=lambda p: abs(phases[p] - a.nominal_v))
            worst = phases[worst_p]
            dev = (worst - a.nominal_v) / a.nominal_v
            outside = abs(dev) > cfg.band_fraction
            hard = dev > cfg.band_fraction or dev < -cfg.hard_low_fraction
            det = {"phase_means_v": {p: round(m, 2) for p, m in phases.items()}, "nominal_v": a.nominal_v,
                   "deviation_pct": round(100 * dev, 2)}
            msg = (f"10-minute mean voltage of {a.id} {worst:.1f} V on {worst_p} ({100 * dev:+.1f} % of "
                   f"{a.nominal_v:.0f} V)")
            out += self._set(state, a.id, "voltage_band", outside, ts,
                             Priority.HIGH if hard else Priority.MEDIUM, msg, worst, det)
            out += self._week(state, a, ts, outside)
            if len(phases) == 3:
                mean = sum(phases.values()) / 3
                imb = 100 * max(abs(v - mean) for v in phases.values()) / mean
                out += self._set(state, a.id, "imbalance", imb > cfg.imbalance_pct, ts, Priority.LOW,
                                 f"Voltage imbalance of {a.id}: {imb:.2f} % (limit {cfg.imbalance_pct} %)",
                                 imb, {"imbalance_pct": round(imb, 3), **det})
        if a.rating_kva:
            out += self._overload(state, a, means, ts)
        return out

    def _week(self, state: QualityState, a: _Asset, ts: int, outside: bool) -> list[Condition]:
        """EN 50160's weekly statistic over a sliding 7 days of 10-minute means."""
        week = state.weeks.setdefault(a.id, deque())
        week.append((ts, outside))
        while week and week[0][0] <= ts - WEEK_MS:
            week.popleft()
        day = ts // DAY_MS
        if state.week_judged.get(a.id) == day:
            return []  # judged once a day: a statistic re-judged every window chatters at the limit
        if len(week) < self.cfg.week_min_coverage * self.week_windows:
            return []
        state.week_judged[a.id] = day
        n_out = sum(1 for _, o in week if o)
        pct = 100 * n_out / len(week)
        limit = self.cfg.week_outside_pct
        det = {"outside_pct": round(pct, 2), "windows": len(week), "windows_outside": n_out,
               "limit_pct": limit, "band_pct": 100 * self.cfg.band_fraction, "nominal_v": a.nominal_v}
        msg = (f"EN 50160 weekly: {pct:.1f} % of the 10-minute mean voltages of {a.id} over the last "
               f"7 days outside nominal +/- {100 * self.cfg.band_fraction:g} % (limit {limit:g} %)")
        return self._set(state, a.id, "voltage_week", pct > limit, ts, Priority.MEDIUM, msg, pct, det)

    def _kva(self, kw: float, kvar: float | None) -> float:
        if kvar is None:
            pf = self.cfg.power_factor_default
            return abs(kw) / pf
        return math.hypot(kw, kvar)

    def _overload(self, state: QualityState, a: _Asset, means: dict[str, float], ts: int) -> list[Condition]:
        assert a.rating_kva is not None
        tx_kva = None
        if "total_power_w" in means:
            q = means.get("total_reactive_power_var")
            tx_kva = self._kva(means["total_power_w"] / 1000, None if q is None else q / 1000)
        known = [state.meter_kw[m] for m in a.meters if m in state.meter_kw]
        cust_kva = self._kva(sum(k for k, _ in known), None if any(q is None for _, q in known)
                             else sum(q or 0.0 for _, q in known)) if known else None
        loads = [x for x in (tx_kva, cust_kva) if x is not None]
        if not loads:
            return []
        load = max(loads)
        limit = self.cfg.overload_fraction * a.rating_kva
        det = {"load_kva": round(load, 2), "rating_kva": a.rating_kva,
               "lv_meter_kva": None if tx_kva is None else round(tx_kva, 2),
               "customers_kva": None if cust_kva is None else round(cust_kva, 2),
               "meters_reporting": len(known), "loading_pct": round(100 * load / a.rating_kva, 1)}
        return self._set(state, a.id, "overload", load > limit, ts, Priority.HIGH,
                         f"Transformer {a.id} loaded at {load:.0f} kVA, {100 * load / a.rating_kva:.0f} % of "
                         f"its {a.rating_kva:.0f} kVA nameplate", load / a.rating_kva, det)
