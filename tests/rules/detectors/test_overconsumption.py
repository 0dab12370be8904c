"""Over-consumption against the same period last year.

The judgement (``compare``) runs on golden cases (cases/oc_*: daily.csv, case.yaml,
expected.json), traps included: four months of history, holidays in both periods,
implausible days. The InfluxDB adapter (``daily_litres``) and the daily check run against
the real InfluxDB fixture with rollup rows written into ``rp_1d.telemetry_1d``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aquavolt.config import load_field
from aquavolt.influx import Influx
from aquavolt.rulecfg import OverConsumptionConfig
from aquavolt.rules.detectors.overconsumption import (
    Hysteresis,
    OverConsumptionCheck,
    RollupNotReady,
    compare,
    daily_litres,
    hysteresis,
)
from aquavolt.schema import continuous_queries, line
from aquavolt.settings import InfluxSettings

CASES = Path(__file__).parent / "cases"
DAILY = sorted(p for p in CASES.iterdir() if (p / "daily.csv").exists())
NAMES = sorted(p.name for p in DAILY if "today" in yaml.safe_load((p / "case.yaml").read_text()))
SEQUENCES = sorted(p.name for p in DAILY if "check_from" in yaml.safe_load((p / "case.yaml").read_text()))
ROOT = Path(__file__).resolve().parents[3]


def _daily(folder: Path) -> dict[date, float | None]:
    with (folder / "daily.csv").open() as fh:
        return {date.fromisoformat(r["day"]): (float(r["litres"]) if r["litres"] else None)
                for r in csv.DictReader(fh)}


def _verdict(folder: Path) -> dict[str, object]:
    spec = yaml.safe_load((folder / "case.yaml").read_text())
    cfg = OverConsumptionConfig.model_validate(spec.get("rules", {}))
    v = compare("c0001", _daily(folder), date.fromisoformat(spec["today"]), cfg)
    d = dataclasses.asdict(v)
    d["period_start"], d["period_end"] = v.period_start.isoformat(), v.period_end.isoformat()
    return d


def test_cases_at_least() -> None:
    assert {"oc_alert", "oc_short_history", "oc_holiday", "oc_implausible"} <= set(NAMES)
    assert "oc_flapping" in SEQUENCES


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str) -> None:
    got = _verdict(CASES / name)
    want = json.loads((CASES / name / "expected.json").read_text())
    assert got == want


@pytest.mark.parametrize("name", SEQUENCES)
def test_golden_sequence(name: str) -> None:
    """A daily check every day from ``check_from`` to ``check_to``: the raises and clears
    that reach the customer, through the hysteresis."""
    folder = CASES / name
    spec = yaml.safe_load((folder / "case.yaml").read_text())
    cfg = OverConsumptionConfig.model_validate(spec.get("rules", {}))
    daily = _daily(folder)
    h = Hysteresis()
    got = []
    day, last = date.fromisoformat(spec["check_from"]), date.fromisoformat(spec["check_to"])
    while day <= last:
        v = compare("c0001", daily, day, cfg)
        if hysteresis(h, v, cfg):
            got.append({"day": day.isoformat(), "active": h.active, "ratio": v.ratio})
        day += timedelta(days=1)
    assert got == json.loads((folder / "expected.json").read_text())


def test_clear_ratio_below_raise_ratio() -> None:
    with pytest.raises(ValueError, match=r"clear_ratio 1\.3 must be below ratio_threshold 1\.3"):
        OverConsumptionConfig(clear_ratio=1.3)


def test_message_explains_itself() -> None:
    v = _verdict(CASES / "oc_alert")
    assert v["message"] == ("Your consumption from 1 to 14 March is 46 % above the same period last year "
                            "(312 L/day vs 214 L/day). Please check your installation for leaks.")


def _ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)


def test_influx_adapter_and_daily_check(influx_settings: InfluxSettings) -> None:
    influx = Influx(influx_settings)
    influx.execute(continuous_queries(influx_settings.database))
    rollup = Influx(influx_settings.model_copy(update={"retention_policy": "rp_1d"}))
    today = date(2026, 3, 15)
    lines = []
    total = {"wm-c0001": 500.0, "wm-c0002": 800.0}
    d = today - timedelta(days=430)
    while d < today:
        for dev in list(total):
            leak = dev == "wm-c0001" and d >= date(2026, 3, 1)
            total[dev] += 0.312 if leak else 0.214
            if dev == "wm-c0002" and d == date(2026, 3, 5):
                continue  # no rollup that day: 5 and 6 March unknown
            lines.append(line("telemetry_1d", {"gateway": "gw-meters-a", "device": dev, "point": "volume_m3"},
                              {"last": round(total[dev], 6), "count": 96}, _ms(d)))
        d += timedelta(days=1)
    rollup.write(lines)
    got = daily_litres(influx, ["wm-c0001", "wm-c0002"], date(2026, 3, 1), date(2026, 3, 14))
    assert got["wm-c0001"][date(2026, 3, 2)] == pytest.approx(312.0, abs=0.01)
    assert got["wm-c0002"][date(2026, 3, 4)] == pytest.approx(214.0, abs=0.01)
    assert got["wm-c0002"][date(2026, 3, 5)] is None and got["wm-c0002"][date(2026, 3, 6)] is None

    loaded = load_field(ROOT / "examples/demo-town.yaml")
    check = OverConsumptionCheck(loaded, influx)
    conds = check.check(today, _ms(today))
    assert [(c.asset, c.active, c.audience) for c in conds] == [("c0001", True, "customer")]
    assert conds[0].details["basis"] == "same_period_last_year"
    assert conds[0].value == pytest.approx(312 / 214, rel=1e-3)
    assert check.check(today, _ms(today)) == []  # no change, nothing new
    # the day after, before its rollup exists: the check waits instead of judging without it
    with pytest.raises(RollupNotReady, match="daily rollup of 2026-03-15 not written yet"):
        check.check(today + timedelta(days=1), _ms(today + timedelta(days=1)))
