"""The physical model of a field: water network and electricity grid, tick by tick.

``FieldModel.advance(t)`` moves the state in fixed simulated steps (``step_s``) from the
run's start; every reading belongs to a tick, so readings depend only on (seed, start,
step, faults) and never on the wall clock. Customer figures come in closed form from
:mod:`simulators.demand`; the few stateful parts (tank level, pump control, transformer
temperature) integrate with explicit Euler steps. Everything is vectorised over customers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aquavolt.config import LoadedField
from aquavolt.faults import FaultKind
from aquavolt.simulators.demand import REFERENCE, Array, Demand, Totals, utc_offset_s
from aquavolt.simulators.faults import Fault, FaultBook

G_BAR_PER_M = 1 / 10.197
BACKGROUND_L_PER_KM_H = 40.0  # background losses per km of main (domain.md)
# Zone pressure at the critical point: the zone's night (static) head less the friction of
# its mains, which grows as the flow to the power 1.852 (Hazen-Williams). Mains are sized for
# a fire hydrant's 17 L/s (60 m3/h for 2 h) on top of the peak hour's demand, leaving 1 bar at
# the critical point: a small zone's domestic peaks cost it a metre or two, a burst much more.
HW_EXPONENT = 1.852
FIRE_FLOW_LPS = 17.0
PEAK_HOUR_FACTOR = 2.5
RESIDUAL_HEAD_M = 10.0
PF = 0.95
TAN_PHI = math.tan(math.acos(PF))


@dataclass
class PumpState:
    running: bool = False
    enabled: bool = True  # run_command coil: false stops the pump (manual)
    speed_pct: float = 100.0
    flow_lps: float = 0.0
    head_m: float = 0.0
    current_a: float = 0.0
    run_hours_h: float = 0.0
    starts: int = 0
    fault_code: int = 0


class FieldModel:
    def __init__(self, loaded: LoadedField, seed: int, start: float, faults: FaultBook,
                 step_s: float = 10.0) -> None:
        self.loaded = loaded
        f = self.field = loaded.field
        self.seed = seed
        self.start = start
        self.step_s = step_s
        self.faults = faults
        self.demand = Demand(f.customers, seed, utc_offset_s(f.timezone, start))
        cust = f.customers
        self.cust_index = {c.id: i for i, c in enumerate(cust)}
        self.wm_index = {c.water_meter: i for i, c in enumerate(cust) if c.water_meter}
        self.em_index = {c.electricity_meter: i for i, c in enumerate(cust) if c.electricity_meter}
        zones = f.water.zones
        self.zone_index = {z.id: i for i, z in enumerate(zones)}
        self.cust_zone = np.array([self.zone_index.get(c.zone or "", len(zones)) for c in cust],
                                  dtype=np.int64)
        self.tx_ids = list(f.transformers)
        self.tx_index = {t: i for i, t in enumerate(self.tx_ids)}
        self.feeder_ids = list(f.feeders)
        self.feeder_index = {fid: i for i, fid in enumerate(self.feeder_ids)}
        self.tx_feeder = np.array([self.feeder_index[f.transformers[t][1].id] for t in self.tx_ids],
                                  dtype=np.int64)
        self.cust_tx = np.array([self.tx_index.get(c.transformer or "", len(self.tx_ids)) for c in cust],
                                dtype=np.int64)
        self.cust_phase = np.arange(len(cust)) % 3
        rng = np.random.default_rng([seed, 0xFEED])
        self.zone_volume0_m3 = rng.uniform(1e5, 5e5, len(zones))
        self.zone_mean_lps = np.bincount(self.cust_zone, self.demand.water_mean_l / 86400,
                                         minlength=len(zones) + 1)[: len(zones)] + self.background_lps()
        self.zone_static_m = np.array([z.average_pressure_m for z in zones], dtype=float)
        design_lps = FIRE_FLOW_LPS + PEAK_HOUR_FACTOR * self.zone_mean_lps
        self.zone_friction = (np.maximum(self.zone_static_m - RESIDUAL_HEAD_M, 0.0)
                              / design_lps**HW_EXPONENT)
        # position of each transformer along its feeder (fraction of its length)
        pos = np.zeros(len(self.tx_ids))
        for _sid, fd in f.feeders.values():
            n = len(fd.transformers)
            for k, t in enumerate(fd.transformers):
                pos[self.tx_index[t.id]] = (k + 1) / n
        self.tx_pos = pos
        self.tx_rating_kva = np.array([f.transformers[t][2].rating_kva for t in self.tx_ids])
        self.feeder_r_ohm = np.array([f.feeders[x][1].length_km * f.feeders[x][1].resistance_ohm_per_km
                                      for x in self.feeder_ids])
        self.pumps = {p.id: PumpState(running=(i == 0 and p.tank is not None),
                                      run_hours_h=float(rng.uniform(4000, 20000)),
                                      starts=int(rng.integers(500, 3000)))
                      for i, p in enumerate(f.water.pumps)}
        self.levels = {t.id: t.initial_level_m if t.initial_level_m is not None
                       else (t.low_level_m + t.high_level_m) / 2 for t in f.water.tanks}
        self.oil_c: float | None = None
        self.tick = -1
        self.t = start
        self.snap: Snapshot | None = None
        self._fault_base: dict[tuple[str, float], tuple[Array, Array]] = {}
        self.on_tick: list[Callable[[], None]] = []  # called after every tick (sensor faults)

    # ------------------------------------------------------------ helpers
    def background_lps(self) -> Array:
        return np.array([z.mains_length_km * BACKGROUND_L_PER_KM_H / 3600 for z in self.field.water.zones])

    def _base_at(self, fault: Fault, t: float) -> tuple[Array, Array]:
        """Un-faulted totals at an instant (cached: fault starts and ends)."""
        key = (fault.id, t)
        hit = self._fault_base.get(key)
        if hit is None:
            tot = self.demand.at(t)
            hit = self._fault_base[key] = (tot.water_l, tot.energy_kwh)
        return hit

    def dead_transformers(self, t: float) -> Array:
        """Bool per transformer: no supply (own outage or its feeder's)."""
        dead = np.zeros(len(self.tx_ids) + 1, dtype=bool)
        for fl in self.faults.of(FaultKind.TRANSFORMER_OUTAGE, FaultKind.FEEDER_OUTAGE):
            if not fl.active(t):
                continue
            if fl.kind is FaultKind.TRANSFORMER_OUTAGE:
                dead[self.tx_index[fl.target]] = True
            else:
                dead[:-1] |= self.tx_feeder == self.feeder_index[fl.target]
        return dead

    def customer_totals(self, t: float) -> tuple[Totals, Array]:
        """Demand with customer faults applied; and the dead-customer mask."""
        tot = self.demand.at(t)
        water, energy = tot.water_l.copy(), tot.energy_kwh.copy()
        flow, power = tot.flow_lph.copy(), tot.power_w.copy()
        for fl in self.faults.of(FaultKind.CUSTOMER_LEAK, FaultKind.OVER_CONSUMPTION):
            if t < fl.start:
                continue
            i = self.cust_index[fl.target]
            if fl.kind is FaultKind.CUSTOMER_LEAK:
                water[i] += fl.params["rate_lph"] * fl.overlap(fl.start, t) / 3600
                if fl.active(t):
                    flow[i] += fl.params["rate_lph"]
            else:
                k = fl.params["factor"]
                w0 = self._base_at(fl, fl.start)[0][i]
                w1 = tot.water_l[i] if t < fl.end else self._base_at(fl, fl.end)[0][i]
                water[i] += (k - 1) * (w1 - w0)
                if fl.active(t):
                    flow[i] *= k
        dead_tx = self.dead_transformers(t)
        for fl in self.faults.of(FaultKind.TRANSFORMER_OUTAGE, FaultKind.FEEDER_OUTAGE):
            if t < fl.start:
                continue
            if fl.kind is FaultKind.TRANSFORMER_OUTAGE:
                mask = self.cust_tx == self.tx_index[fl.target]
            else:
                txs = np.append(self.tx_feeder == self.feeder_index[fl.target], False)
                mask = txs[self.cust_tx]
            _, e0 = self._base_at(fl, fl.start)
            e1 = tot.energy_kwh if fl.active(t) else self._base_at(fl, fl.end)[1]
            energy[mask] -= (e1 - e0)[mask]
        dead = dead_tx[self.cust_tx]
        power[dead] = 0.0
        return Totals(water, energy, flow, power), dead

    # ------------------------------------------------------------ stepping
    def advance(self, t: float) -> bool:
        """Run every tick up to ``t``; True when a new tick was made."""
        target = math.floor((t - self.start) / self.step_s + 1e-9)
        moved = False
        while self.tick < target:
            self.tick += 1
            self._step(self.start + self.tick * self.step_s)
            for hook in self.on_tick:
                hook()
            moved = True
        return moved

    def _step(self, t: float) -> None:
        f = self.field
        dt = self.step_s if self.tick > 0 else 0.0
        tot, dead = self.customer_totals(t)
        nz = len(f.water.zones)
        zone_flow = np.bincount(self.cust_zone, tot.flow_lph / 3600, minlength=nz + 1)[:nz]
        zone_flow = zone_flow + self.background_lps()
        zone_vol = self.zone_volume0_m3 + np.bincount(self.cust_zone, tot.water_l / 1000,
                                                      minlength=nz + 1)[:nz]
        zone_vol = zone_vol + self.background_lps() * (t - REFERENCE) / 1000
        drop_m = np.zeros(nz)
        for fl in self.faults.of(FaultKind.ZONE_LEAK, FaultKind.BURST):
            z = self.zone_index[fl.target]
            zone_vol[z] += fl.params["rate_lps"] * fl.overlap(fl.start, t) / 1000
            if fl.active(t):
                zone_flow[z] += fl.params["rate_lps"]
                if fl.kind is FaultKind.BURST:
                    drop_m[z] += fl.params["drop_bar"] / G_BAR_PER_M
        zone_pressure_m = (self.zone_static_m
                           - self.zone_friction * np.maximum(zone_flow, 0.0)**HW_EXPONENT - drop_m)
        self._pumps_and_tanks(t, dt, zone_flow)
        elec = self._electricity(t, dt, tot, dead)
        self.snap = Snapshot(t, self.tick, tot, dead, zone_flow, zone_vol,
                             np.maximum(zone_pressure_m, 0.0), elec)

    def _pumps_and_tanks(self, t: float, dt: float, zone_flow: Array) -> None:
        f = self.field
        for tank in f.water.tanks:
            pumps = [p for p in f.water.pumps if p.tank == tank.id]
            level = self.levels[tank.id]
            tripped = {p.id for p in pumps if self.faults.active(t, FaultKind.PUMP_TRIP, p.id)}
            stuck = {p.id for p in pumps if self.faults.active(t, FaultKind.PUMP_STUCK_ON, p.id)}
            calling = any(self.pumps[p.id].running for p in pumps)
            if level <= tank.low_level_m:
                calling = True
            elif level >= tank.high_level_m:
                calling = False
            duty = next((p.id for p in pumps if p.id not in tripped and self.pumps[p.id].enabled), None)
            inflow = 0.0
            for p in pumps:
                st = self.pumps[p.id]
                run = (calling and p.id == duty) or p.id in stuck
                run = run and p.id not in tripped and (st.enabled or p.id in stuck)
                if p.id in tripped:
                    st.fault_code = int(next(x.params["fault_code"] for x in self.faults.active(
                        t, FaultKind.PUMP_TRIP, p.id)))
                else:
                    st.fault_code = 0
                if run and not st.running:
                    st.starts += 1
                st.running = run
            running = [p for p in pumps if self.pumps[p.id].running]
            n = len(running)
            for p in pumps:
                st = self.pumps[p.id]
                s = st.speed_pct / 100
                static = p.rated_head_m - 10.0 + level - (tank.low_level_m + tank.high_level_m) / 2
                k_sys = 10.0 / p.rated_flow_lps**2
                a = (p.shutoff_head_m - p.rated_head_m) / p.rated_flow_lps**2
                if st.running:
                    q_tot = math.sqrt(max(p.shutoff_head_m * s * s - static, 0.0) / (a / n**2 + k_sys))
                    st.flow_lps = q_tot / n
                    st.head_m = p.shutoff_head_m * s * s - a * st.flow_lps**2
                    hyd = st.flow_lps * st.head_m / (p.rated_flow_lps * p.rated_head_m)
                    st.current_a = p.rated_current_a * (0.35 + 0.65 * hyd) * max(s, 0.3)
                    st.run_hours_h += dt / 3600
                    inflow += st.flow_lps
                else:
                    st.flow_lps, st.current_a = 0.0, 0.0
                    st.head_m = max(static - 5.0, 0.0)  # the check valve holds the column
            z = self.zone_index[tank.zone]
            n_tanks = sum(1 for x in f.water.tanks if x.zone == tank.zone)
            outflow = zone_flow[z] / n_tanks
            level += (inflow - outflow) * dt / 1000 / tank.area_m2
            self.levels[tank.id] = min(max(level, 0.0), tank.height_m)  # above: overflow spills

    def _electricity(self, t: float, dt: float, tot: Totals, dead: Array) -> Elec:
        f = self.field
        ntx = len(self.tx_ids)
        p_phase = np.bincount(self.cust_tx * 3 + self.cust_phase, tot.power_w,
                              minlength=(ntx + 1) * 3)[: ntx * 3].reshape(ntx, 3) * 1.03
        dead_tx = self.dead_transformers(t)[:ntx]
        p_phase[dead_tx] = 0.0
        e_tx = np.bincount(self.cust_tx, tot.energy_kwh, minlength=ntx + 1)[:ntx] * 1.03
        nf = len(self.feeder_ids)
        no_load = np.where(dead_tx, 0.0, self.tx_rating_kva * 3.0)  # 0.3 % iron losses, W per kVA
        p_tx = p_phase.sum(axis=1) + no_load
        p_feeder = np.bincount(self.tx_feeder, p_tx, minlength=nf)
        feeder_open = np.zeros(nf, dtype=bool)
        for fl in self.faults.active(t, FaultKind.FEEDER_OUTAGE):
            feeder_open[self.feeder_index[fl.target]] = True
        v_ll = f.electricity.feeder_nominal_voltage_v
        load_kva = float(p_feeder.sum() / PF / 1000)
        sub_kva = f.electricity.substations[0].rating_kva if f.electricity.substations else 10000.0
        busbar = v_ll * (1.0 + 0.001 * math.sin(2 * math.pi * (t % 86400) / 86400)) - 0.02 * load_kva
        i_feeder = np.where(feeder_open, 0.0, p_feeder / (math.sqrt(3) * busbar * PF))
        drop = math.sqrt(3) * i_feeder[self.tx_feeder] * self.feeder_r_ohm[self.tx_feeder] * self.tx_pos
        v_tx_ll = np.where(dead_tx, 0.0, busbar - drop)
        i_rated = self.tx_rating_kva * 1000 / (3 * f.electricity.nominal_voltage_v)
        z_lv = 0.04 * f.electricity.nominal_voltage_v / i_rated
        v_nl = f.electricity.nominal_voltage_v * 1.025 * v_tx_ll / v_ll
        i_phase = p_phase / (np.maximum(v_nl, 1.0)[:, None] * PF)
        v_phase = np.where(dead_tx[:, None], 0.0, v_nl[:, None] - i_phase * z_lv[:, None])
        # transformer oil temperature: first-order lag (3 h) towards ambient + rise(load)
        doy = (t - REFERENCE) / 86400 % 365.25
        ambient = 20 + 8 * math.cos(2 * math.pi * (doy - 200) / 365.25) \
            + 5 * math.sin(2 * math.pi * ((t % 86400) / 86400 - 0.375))
        x = load_kva / sub_kva
        target = ambient + 40 * x**1.6 + 8
        if self.oil_c is None:
            self.oil_c = target
        self.oil_c += (target - self.oil_c) * min(dt / 10800, 1.0)
        return Elec(p_phase, v_phase, i_phase, e_tx, p_tx, p_feeder, i_feeder, feeder_open,
                    np.bincount(self.tx_feeder, e_tx, minlength=nf), busbar, load_kva,
                    self.oil_c, self.oil_c + 15 * x**1.6, dead_tx)


@dataclass(frozen=True)
class Elec:
    p_phase_w: Array  # (transformers, 3)
    v_phase_v: Array
    i_phase_a: Array
    energy_tx_kwh: Array
    p_tx_w: Array
    p_feeder_w: Array
    i_feeder_a: Array
    feeder_open: Array
    energy_feeder_kwh: Array
    busbar_v: float
    load_kva: float
    oil_c: float
    winding_c: float
    dead_tx: Array


@dataclass(frozen=True)
class Snapshot:
    """Everything measured at one tick."""

    t: float
    tick: int
    customers: Totals
    dead: Array  # customers without supply
    zone_flow_lps: Array
    zone_volume_m3: Array
    zone_pressure_m: Array
    elec: Elec
