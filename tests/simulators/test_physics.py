"""Physics invariants over one simulated day of the demo field, fault visibility in the raw
values at the fault's time, and reproducibility (same seed and scenario, same readings)."""

from __future__ import annotations

import numpy as np
import pytest

from aquavolt.clock import parse_instant
from aquavolt.faults import FaultSpec
from aquavolt.simulators.demand import UNDER_REGISTRATION
from aquavolt.simulators.sim import Simulation

T0 = parse_instant("2026-06-01T00:00:00Z")


def sim_of(demo, h, seed=1, step_s=60.0):
    clock = h.frozen_clock()
    return Simulation(demo, seed, T0, clock, step_s=step_s)


@pytest.fixture(scope="module")
def day(demo):
    """One day at 60 s steps: every device's values every 10 minutes."""
    from aquavolt.clock import SimClock

    sim = Simulation(demo, 1, T0, SimClock(T0, 1e-6), step_s=60.0)
    rows = []
    for k in range(24 * 6 + 1):
        sim.model.advance(T0 + k * 600)
        rows.append({d: sim.values(d) for d in demo.field.devices})
    return sim, rows


def series(rows, dev, point):
    return np.array([r[dev][point] for r in rows], dtype=float)


def test_totalisers_only_grow(day, demo):
    _sim, rows = day
    n = 0
    for dev in demo.field.devices:
        prof = demo.profile_of(dev)
        for p in prof.points:
            if p.kind == "counter":
                s = series(rows, dev, p.name)
                assert np.all(np.diff(s) >= 0), (dev, p.name)
                n += 1
    assert n > 500


def test_zone_balance_closes(day, demo):
    _sim, rows = day
    for zone in demo.field.water.zones:
        inlet = sum(series(rows, d, "volume_m3") for d in zone.inlet_meters)
        meters = [c.water_meter for c in demo.field.customers if c.zone == zone.id]
        billed = sum(series(rows, m, "volume_m3") for m in meters)
        background = zone.mains_length_km * 40.0 * 24 / 1000  # m3 over the day
        d_in = inlet[-1] - inlet[0]
        d_customers = (billed[-1] - billed[0]) / UNDER_REGISTRATION
        assert d_in == pytest.approx(d_customers + background, rel=1e-6), zone.id
        assert d_in > 10


def test_tank_within_bounds_and_pumps_follow_level(day, demo):
    _sim, rows = day
    tank = demo.field.water.tanks[0]
    level = series(rows, tank.device, "level_m")
    assert np.all(level >= -0.01) and np.all(level <= tank.height_m + 0.01)
    running = series(rows, "pump-1", "running")
    assert running[0] == 1 and running.min() == 0  # filled, then stopped at the high level
    assert level.max() <= tank.high_level_m + 0.05
    flow = series(rows, "pump-1", "flow_lps")
    press = series(rows, "pump-1", "discharge_pressure_bar")
    on = running == 1
    # along the pump curve: more flow, less head
    assert np.corrcoef(flow[on], press[on])[0, 1] < 0


def test_voltage_drops_with_load(day, demo):
    _sim, rows = day
    p = series(rows, "tx-1b-meter", "power_l1_w")
    v = series(rows, "tx-1b-meter", "voltage_l1_v")
    assert np.corrcoef(p, v)[0, 1] < -0.8
    assert 207 < v.min() < v.max() < 253  # EN 50160 band
    feeder_p = series(rows, "ss1-feeder-1", "active_power_kw")
    tx_p = (series(rows, "tx-1a-meter", "total_power_w") + series(rows, "tx-1b-meter", "total_power_w")) / 1000
    assert np.all(feeder_p > tx_p)  # feeder = sum downstream + transformer losses
    oil = series(rows, "ss1-transformer", "oil_temperature_c")
    assert 10 < oil.min() < oil.max() < 80


def test_night_flow_lower_than_day_flow(day, demo):
    _sim, rows = day
    q = series(rows, "inlet-zone-a", "flow_lps")
    local_hour = ((np.arange(len(q)) * 600 + 3600) // 3600) % 24  # Casablanca, UTC+1
    night = q[(local_hour >= 2) & (local_hour < 4)]
    dayq = q[(local_hour >= 8) & (local_hour < 20)]
    assert night.mean() < 0.5 * dayq.mean()
    assert night.min() > 0  # background leakage never stops


FAULTS = [
    ("zone_leak", dict(target="zone-a", rate_lps=0.6), "inlet-zone-a", "flow_lps", lambda a, b: b - a > 0.4),
    ("burst", dict(target="zone-b", rate_lps=8, drop_bar=0.8), "pressure-zone-b", "pressure_bar",
     lambda a, b: a - b > 0.5),
    ("customer_leak", dict(target="c0001", rate_lph=15), "wm-c0001", "flow_lph", lambda a, b: b - a > 10),
    ("over_consumption", dict(target="c0121", factor=3), "wm-c0121", "volume_m3", None),
    ("feeder_outage", dict(target="feeder-1"), "ss1-feeder-1", "breaker_closed", lambda a, b: a and not b),
    ("transformer_outage", dict(target="tx-2a"), "tx-2a-meter", "voltage_l1_v", lambda a, b: a > 200 and b == 0),
    ("pump_trip", dict(target="pump-1", fault_code=17), "pump-1", "fault_code", lambda a, b: a == 0 and b == 17),
    ("pump_stuck_on", dict(target="pump-1"), "pump-1", "running", None),
    ("sensor_stuck", dict(target="pressure-zone-a", point="pressure_bar"), "pressure-zone-a", "pressure_bar", None),
    ("sensor_spike", dict(target="tank-north-level", point="level_m", magnitude=2.0), "tank-north-level",
     "level_m", lambda a, b: b - a > 1.9),
    ("sensor_drift", dict(target="inlet-zone-b", point="pressure_bar", rate_per_h=0.5), "inlet-zone-b",
     "pressure_bar", None),
]


@pytest.mark.parametrize("kind,params,dev,point,check", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_visible_at_its_time(demo, h, kind, params, dev, point, check):
    at = 10 * 3600  # 10:00 UTC: daytime
    clean, faulty = sim_of(demo, h), sim_of(demo, h)
    faulty.faults.add(FaultSpec(kind=kind, at=at, **params), T0)
    before = at - 60
    for s in (clean, faulty):
        s.model.advance(T0 + before)
    assert clean.values(dev) == faulty.values(dev)  # nothing before its time
    if kind == "over_consumption":
        for s in (clean, faulty):
            s.model.advance(T0 + at + 6 * 3600)
        v0 = clean.values(dev)[point]
        v1 = faulty.values(dev)[point]
        assert v1 > v0 + 0.01
        return
    if kind == "pump_stuck_on":
        for s in (clean, faulty):
            s.model.advance(T0 + 30 * 3600)
        assert clean.values(dev)["running"] is False and faulty.values(dev)["running"] is True
        lvl = faulty.values("tank-north-level")["level_m"]
        assert lvl > demo.field.water.tanks[0].high_level_m + 0.2  # overflowing
        return
    faulty.model.advance(T0 + at + 120)
    clean.model.advance(T0 + at + 120)
    b = faulty.values(dev)[point]
    if kind == "sensor_stuck":
        faulty.model.advance(T0 + at + 4 * 3600)
        assert faulty.values(dev)[point] == b
        clean.model.advance(T0 + at + 4 * 3600)
        assert clean.values(dev)[point] != b
        return
    if kind == "sensor_drift":
        faulty.model.advance(T0 + at + 4 * 3600)
        clean.model.advance(T0 + at + 4 * 3600)
        assert faulty.values(dev)[point] - clean.values(dev)[point] == pytest.approx(2.0, abs=0.01)
        return
    assert check(clean.values(dev)[point], b), (clean.values(dev)[point], b)


def test_outage_energy_stops_and_comes_back(demo, h):
    s = sim_of(demo, h)
    s.faults.add(FaultSpec(kind="transformer_outage", target="tx-1a", at=3600, duration="2h"), T0)
    e = []
    for k in (3500, 3700, 7000, 10700, 11000, 20000):
        s.model.advance(T0 + k)
        e.append(s.values("em-c0001")["energy_kwh"])
    assert e[1] == pytest.approx(e[2]) == pytest.approx(e[3])
    assert e[5] > e[4] > e[3]
    assert s.values("em-c0001")["power_restored"] is False
    s2 = sim_of(demo, h)
    s2.faults.add(FaultSpec(kind="transformer_outage", target="tx-1a", at=3600, duration="2h"), T0)
    s2.model.advance(T0 + 3600 * 3 + 120)
    v = s2.values("em-c0001")
    assert v["power_restored"] is True and v["voltage_v"] > 200


def test_same_seed_same_readings(demo, h):
    runs = []
    for seed in (7, 7, 8):
        s = sim_of(demo, h, seed=seed)
        s.faults.add(FaultSpec(kind="zone_leak", target="zone-a", at="2h", rate_lps=0.5), T0)
        s.faults.add(FaultSpec(kind="pump_trip", target="pump-1", at="3h"), T0)
        out = []
        for k in (1, 5, 9):
            s.model.advance(T0 + k * 3600)
            out.append({d: s.values(d) for d in demo.field.devices})
        runs.append(out)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_standby_takes_over_when_the_duty_pump_trips_during_a_call(demo, h):
    """The station's level control keeps calling for water when the duty pump trips: the
    standby starts at once, not when the tank has drained to its low level."""
    sim = sim_of(demo, h)
    sim.model.advance(T0 + 60)
    assert sim.values("pump-1")["running"] is True and sim.values("pump-2")["running"] is False
    sim.faults.add(FaultSpec(kind="pump_trip", at=120, target="pump-1", fault_code=17), T0)
    sim.model.advance(T0 + 300)
    p1, p2 = sim.values("pump-1"), sim.values("pump-2")
    assert p1["running"] is False and p1["fault_code"] == 17
    assert p2["running"] is True and p2["flow_lps"] > 5.0
