"""The shipped scenarios load, cover every fault kind, name known conditions and assets,
and each fault shows in its target's raw values (or answers) at its time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aquavolt.clock import SimClock
from aquavolt.faults import TARGET_OF, FaultKind, parse_when
from aquavolt.scenario import known_condition, load_scenario
from aquavolt.simulators.devices import OK
from aquavolt.simulators.sim import Simulation

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def loaded(demo):
    return {p.stem: load_scenario(p, loaded=demo) for p in SCENARIOS}


def test_every_fault_kind_has_a_scenario_and_a_clean_week_exists(loaded):
    direct = load_scenario(next(p for p in SCENARIOS if p.stem == "demo-day"))
    assert direct.field.field.id == "demo-town"  # the field path inside the file resolves
    kinds = {f.kind for sc in loaded.values() for f in sc.scenario.faults}
    assert kinds == set(FaultKind)
    clean = loaded["clean-week"]
    assert not clean.scenario.faults and clean.end - clean.start == 7 * 86400
    assert clean.scenario.forbid and (clean.end - clean.start) / clean.scenario.acceleration < 200


def test_expectations_and_allowances_name_known_conditions_and_assets(loaded):
    for name, sc in loaded.items():
        f = sc.field.field
        points = {p.name for prof in sc.field.profiles.values() for p in prof.points}
        assets = (set(f.devices) | {z.id for z in f.water.zones} | {c.id for c in f.customers}
                  | set(f.transformers) | set(f.feeders) | {g.id for g in f.gateways}
                  | {f"{g.id}.{b.id}" for g in f.gateways for b in g.buses})  # bus roll-ups
        for e in sc.scenario.expect:
            assert known_condition(e.condition, points), (name, e.condition)
            assert e.asset in assets, (name, e.asset)
            assert sc.start < sc.deadline(e) <= sc.end, name
        for fb in [*sc.scenario.forbid, *sc.scenario.allow]:
            assert known_condition(fb.condition, points), (name, fb.condition)
            assert fb.asset is None or fb.asset in assets, (name, fb.asset)


def _watch(sim: Simulation, kind: FaultKind, target: str) -> str:
    what = TARGET_OF.get(kind, "device")
    f = sim.loaded.field
    if what == "zone":
        return next(z for z in f.water.zones if z.id == target).inlet_meters[0]
    if what == "customer":
        return next(c for c in f.customers if c.id == target).water_meter
    if what == "feeder":
        return f.feeders[target][1].device
    if what == "transformer":
        return f.transformers[target][2].device
    if what == "pump":
        return next(p for p in f.water.pumps if p.id == target).device
    return target


@pytest.mark.parametrize("path", [p for p in SCENARIOS if not p.stem.startswith("clean-")],
                         ids=lambda p: p.stem)
def test_scenario_fault_shows_at_its_time(path, loaded):
    sc = loaded[path.stem]
    clock = SimClock(sc.start, 1e-6)
    faulty = Simulation(sc.field, sc.scenario.seed, sc.start, clock, step_s=300)
    clean = Simulation(sc.field, sc.scenario.seed, sc.start, clock, step_s=300)
    for spec in sc.scenario.faults:
        faulty.faults.add(spec, sc.start)
    spec = sc.scenario.faults[0]
    t_fault = parse_when(spec.at, sc.start)
    dev = _watch(faulty, spec.kind, spec.target)
    if t_fault > sc.start:
        for s in (clean, faulty):
            s.model.advance(t_fault - 300)
        assert faulty.values(dev) == clean.values(dev)
    probe = t_fault + {FaultKind.PUMP_STUCK_ON: 6 * 3600, FaultKind.OVER_CONSUMPTION: 8 * 3600,
                       FaultKind.SENSOR_SPIKE: 120}.get(spec.kind, 600)
    for s in (clean, faulty):
        s.model.advance(probe)
    if spec.kind in (FaultKind.COMM_LOSS, FaultKind.MODBUS_EXCEPTION, FaultKind.SLOW_DEVICE):
        assert clean.devices.answer(dev, probe) == OK
        assert faulty.devices.answer(dev, probe) != OK
    else:
        assert faulty.values(dev) != clean.values(dev), (path.stem, dev)
    assert math.isfinite(sc.end)


def test_readme_samples_are_valid():
    import json
    import re

    import yaml

    from aquavolt.faults import FaultSpec
    from aquavolt.scenario import Scenario

    text = (Path(__file__).resolve().parents[2] / "simulators" / "README.md").read_text()
    sample = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    sc = Scenario.model_validate(yaml.safe_load(sample))
    assert sc.faults[0].kind is FaultKind.BURST and len(sc.expect) == 2
    fault = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    assert FaultSpec.model_validate(json.loads(fault)).kind is FaultKind.ZONE_LEAK
