"""Priming the burst detector from InfluxDB history (real InfluxDB): with three days of
hourly history written as ``aquavolt sim backfill`` does, a burst on the first live day is
judged; without it the detector is still learning and misses it (the burst replay)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from aquavolt.influx import Influx
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors import build_detectors
from aquavolt.rules.history import load_history, prime
from aquavolt.settings import InfluxSettings

sys.path.insert(0, str(Path(__file__).parent / "detectors"))
import yaml
from golden import CASES, case_field, read_samples  # the burst golden case's series

HOUR_MS = 3_600_000


def _case() -> tuple[Any, list[Sample], list[Sample]]:
    folder = CASES / "burst"
    loaded = case_field(folder, yaml.safe_load((folder / "case.yaml").read_text()))
    samples = read_samples(folder / "input.csv")
    day3 = samples[0].ts_ms + 3 * 86_400_000
    return loaded, [s for s in samples if s.ts_ms < day3], [s for s in samples if s.ts_ms >= day3]


def _live(loaded: Any, history: list[Sample], live: list[Sample]) -> list[Condition]:
    rule = next(r for r in build_detectors(loaded) if r.name == "burst:zone-a")
    rules, states = [rule], [rule.init()]
    prime(rules, states, history)
    out: list[Condition] = []
    for s in live:
        if rule.wants(s.device, s.point):
            states[0], c = rule.step(states[0], s)
            out += c
    return out


def test_burst_on_first_live_day_needs_the_history(influx_settings: InfluxSettings) -> None:
    loaded, past, live = _case()
    hourly: dict[int, list[float]] = defaultdict(list)  # hourly means, as the backfill writes them
    for s in past:
        if s.point == "flow_lps":
            hourly[s.ts_ms - s.ts_ms % HOUR_MS].append(float(s.value))  # type: ignore[arg-type]
    influx = Influx(influx_settings)
    influx.write([f"telemetry,device=inlet-zone-a,gateway=gw-pumping,point=flow_lps "
                  f"value={sum(v) / len(v)},quality=192i {t}" for t, v in sorted(hourly.items())]
                 + [f"telemetry,device=inlet-zone-a,gateway=gw-pumping,point=flow_lps value=99.0,quality=0i "
                    f"{live[0].ts_ms - 60_000}"])  # a bad read: not learnt
    history = load_history(influx, loaded, live[0].ts_ms)
    assert len(history) >= 3 * 24 * 12 - 12  # 5-minute slots, held from the hourly means
    assert max(float(s.value) for s in history) < 5  # type: ignore[arg-type]
    assert all(s.ts_ms < live[0].ts_ms and s.historical for s in history)

    assert [c for c in _live(loaded, [], live) if c.active] == []  # still learning: missed
    raised = [c for c in _live(loaded, history, live) if c.active]
    assert len(raised) == 1 and raised[0].asset == "zone-a" and raised[0].condition == "burst"
    step_at = next(s.ts_ms for s in live if s.point == "flow_lps" and float(s.value) > 3.5)  # type: ignore[arg-type]
    assert step_at < raised[0].ts_ms <= step_at + 20 * 60_000  # held 15 min (min_duration_s), slots of 5


def test_a_database_not_created_yet_is_no_history_not_an_error(influxdb, tmp_path, caplog) -> None:
    """The engine may start before any collector has created the database (a fresh install,
    a replay): priming then learns from live readings and counts no error."""
    import asyncio
    import logging

    from aquavolt.clock import ManualClock
    from aquavolt.influx import InfluxError
    from aquavolt.rules.service import Engine
    from aquavolt.settings import MqttSettings

    loaded, _past, live = _case()
    settings = influxdb.settings("never_created")
    influx = Influx(settings)
    try:
        load_history(influx, loaded, live[0].ts_ms)
    except InfluxError as exc:
        assert exc.missing_database, exc
    else:
        raise AssertionError("a query on a missing database did not fail")
    engine = Engine(loaded, MqttSettings(), tmp_path / "rules", ManualClock(live[0].ts_ms / 1000), influx=influx)
    with caplog.at_level(logging.INFO, logger="aquavolt.rules"):
        asyncio.run(engine.prime_from_history())
    assert engine.stats.errors == 0
    assert "database never_created not created yet" in caplog.text
    assert "primed_samples" not in engine.stats.extra


def test_night_flow_baseline_learnt_from_history_subtracts_the_night_users(
        influx_settings: InfluxSettings) -> None:
    """The metering line's zone A has a metered night user (the dairy, wm-c0018) whose night
    use varies from night to night. Live, the night-flow rule subtracts its measured
    ``flow_lph``; the baseline learnt from the backfilled history must subtract it too, or the
    baseline carries the dairy's use and its spread (the noise term), and a 0.08 L/s leak is
    missed in a replay although the detector alone finds it (docs/detection.md)."""
    from datetime import UTC, datetime

    from aquavolt.config import load_field

    loaded = load_field(Path(__file__).parents[2] / "examples" / "meter-line.yaml")
    rule = next(r for r in build_detectors(loaded) if r.name == "night_flow:zone-a")
    day0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp() * 1000)
    base_lps = 0.1  # residents' night use and background losses
    dairy_lph = [100, 400, 150, 350, 200, 300, 120, 380, 250, 180]  # one value per history day
    lines = []
    for d, lph in enumerate(dairy_lph):  # hourly, as `aquavolt sim backfill` writes it
        for h in range(24):
            t = day0 + d * 86_400_000 + h * HOUR_MS
            lines += [f"telemetry,device=inlet-zone-a,gateway=gw-meters-a,point=flow_lps "
                      f"value={base_lps + lph / 3600},quality=192i {t}",
                      f"telemetry,device=wm-c0018,gateway=gw-meters-a,point=flow_lph value={lph},quality=192i {t}"]
    influx = Influx(influx_settings)
    influx.write(lines)
    live_from = day0 + len(dairy_lph) * 86_400_000
    history = load_history(influx, loaded, live_from)
    assert any(s.device == "wm-c0018" and s.point == "flow_lph" for s in history)

    states = [rule.init()]
    prime([rule], states, history)
    learnt = states[0].history
    assert len(learnt) >= 7 and max(learnt) - min(learnt) < 0.02, learnt  # the dairy's use subtracted

    leak_lps, raised = 0.08, []  # 0.288 m3/h, above the zone's 0.2 m3/h floor
    for k in range(2 * 96 + 8):  # two nights of 15-minute reads, the dairy at 400 L/h
        t = live_from + k * 900_000
        for s in (Sample("gw-meters-a", "inlet-zone-a", "flow_lps", base_lps + 400 / 3600 + leak_lps, t),
                  Sample("gw-meters-a", "wm-c0018", "flow_lph", 400.0, t)):
            states[0], _ = rule.step(states[0], s)
        states[0], conds = rule.tick(states[0], t + 1)
        raised += [c for c in conds if c.active]
    assert len(raised) == 1 and raised[0].condition == "night_flow_rise", states[0].history
