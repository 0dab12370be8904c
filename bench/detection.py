"""Detection quality from scenario replays: for each fault-kind scenario, detected
or not, detection delay (event time), false alarms, wall time, and the command.

    .venv/bin/python bench/detection.py                      # every shipped scenario (~15 min)
    .venv/bin/python bench/detection.py burst pump-trip       # some of them
    .venv/bin/python bench/detection.py --from var/detection  # table from earlier reports only
    .venv/bin/python bench/detection.py --from /tmp/pytest-of-$USER/pytest-N/replays0  # the test suite's
    .venv/bin/python bench/detection.py --leak-limit         # smallest zone leak per shipped zone, and
                                                              # continuous flow on model days (~40 s)

Each scenario runs as ``aquavolt replay SCENARIO --workdir var/detection/NAME/run
--report-dir var/detection/NAME``; the table goes to docs/detection-replays.md and the last
line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "examples" / "scenarios"
DOC = ROOT / "docs" / "detection-replays.md"


def run(name: str, out: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "aquavolt.cli", "replay", str(SCENARIOS / f"{name}.yaml"),
                    "--workdir", str(out / name / "run"), "--report-dir", str(out / name)],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1200)
    wall = time.monotonic() - t0
    (out / name / "wall_s").write_text(f"{wall:.0f}")
    return wall


def row(name: str, out: Path) -> dict[str, object]:
    rep = out / name / "replay-report.json"
    if not rep.exists():  # the test suite's layout: NAME/report/replay-report.json
        rep = out / name / "report" / "replay-report.json"
    if not rep.exists():
        return {"scenario": name, "ran": False}
    r = json.loads(rep.read_text())
    wall = out / name / "wall_s"
    return {
        "scenario": name, "ran": True, "passed": r["passed"],
        "expected": [(e["condition"], e["asset"], e["ok"], e["delay_s"]) for e in r["expected"]],
        "false_alarms": r["false_alarms"],
        "false": sorted({a["alarm_id"] for a in r.get("alarms", []) if a["verdict"] == "false"}),
        "wall_s": int(wall.read_text()) if wall.exists() else None,
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| scenario | expected alarm | detected | delay | false alarms | wall s | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cmd = f"`aquavolt replay examples/scenarios/{r['scenario']}.yaml`"
        if not r["ran"]:
            lines.append(f"| {r['scenario']} | | not run | | | | {cmd} |")
            continue
        exp = r["expected"] or [("(none: clean run)", "", True, None)]
        for i, (cond, asset, ok, delay) in enumerate(exp):  # type: ignore[misc]
            det = "yes" if ok else ("late" if delay is not None else "**no**")
            d = f"{delay / 60:.1f} min" if delay is not None else "-"
            fa = (f"{r['false_alarms']}" + (f" ({', '.join(r['false'][:3])})" if r["false"] else "")
                  if i == 0 else "")
            lines.append(f"| {r['scenario'] if i == 0 else ''} | {cond} {asset} | {det} | {d} | {fa} | "
                         f"{r['wall_s'] if i == 0 else ''} | {cmd if i == 0 else ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- smallest detectable zone leak

LEAK_FIELDS = ("demo-town", "small-town", "meter-line")
LEAK_SEEDS = (12, 13, 14)
LEAK_GRID_LPS = tuple(round(0.02 * k, 2) for k in range(1, 26))  # 0.02 .. 0.50 L/s


def _zone_nights(loaded: Any, zone_i: int, seed: int, start: float, nights: int,
                 ) -> list[list[tuple[int, str, str, float]]]:
    """One list of samples per night (01:45-04:15 local) of one zone on the physical model:
    the inlet's flow_lps every minute (the model's zone flow: customers' use, constant per
    15-minute slot, plus background losses, with the inlet meter's 0.5 % noise) and the
    night users' flow_lph every 15 minutes (as their meters report it, 2 % low)."""
    import numpy as np

    from aquavolt.simulators.demand import Demand, utc_offset_s
    from aquavolt.simulators.model import BACKGROUND_L_PER_KM_H

    f = loaded.field
    z = f.water.zones[zone_i]
    demand = Demand(f.customers, seed, utc_offset_s(f.timezone, start))
    mine = np.array([c.zone == z.id for c in f.customers])
    users = [(i, c.water_meter) for i, c in enumerate(f.customers) if c.zone == z.id and c.night_user]
    background_lps = z.mains_length_km * BACKGROUND_L_PER_KM_H / 3600
    rng = np.random.default_rng([seed, zone_i])
    inlet = z.inlet_meters[0]
    out = []
    day0 = demand.local_day(start)
    for n in range(nights):
        t0 = demand.day_start(day0 + n + 1) + 1.75 * 3600
        rows: list[tuple[int, str, str, float]] = []
        for slot in range(10):  # 01:45 .. 04:15
            ts = t0 + slot * 900
            tot = demand.at(ts + 1)
            q = float(tot.flow_lph[mine].sum()) / 3600 + background_lps
            for s in range(15):
                rows.append((int((ts + 60 * s) * 1000), inlet, "flow_lps",
                             q * (1 + 0.005 * float(rng.standard_normal()))))
            for i, dev in users:
                rows.append((int(ts * 1000), dev, "flow_lph", float(tot.flow_lph[i]) * 0.98))
        out.append(sorted(rows))
    return out


def _replay_nights(rule: Any, nights: list[list[tuple[int, str, str, float]]], leak_lps: float,
                   leak_from: int) -> list[int]:
    """Feed the nights to a fresh night-flow rule, the leak added to the inlet from night
    ``leak_from``; the indexes of the nights at whose end it raised."""
    from aquavolt.rules.api import Sample
    from aquavolt.wire import Quality

    state = rule.init()
    raised = []
    for n, rows in enumerate(nights):
        extra = leak_lps if n >= leak_from else 0.0
        for ts, dev, point, v in rows:
            state, _ = rule.step(state, Sample("gw", dev, point, v + (extra if point == "flow_lps" else 0.0),
                                               ts, Quality.GOOD))
        state, conds = rule.tick(state, rows[-1][0] + 3_600_000)
        state, _ = rule.drain_lines(state)
        raised += [n for c in conds if c.active]
    return raised


def leak_limit(fields: tuple[str, ...] = LEAK_FIELDS, seeds: tuple[int, ...] = LEAK_SEEDS,
               train: int = 10, leak_nights: int = 4, clean_nights: int = 30) -> list[dict[str, object]]:
    """Per shipped zone: the smallest leak (L/s, on the grid) the night-flow detector raises
    within ``leak_nights`` nights for every seed, after ``train`` clean nights, with the nights
    it took; and the false raises over ``clean_nights`` clean nights per seed."""
    from datetime import UTC, datetime

    from aquavolt.config import load_field
    from aquavolt.rules.detectors.nightflow import NightFlowRule

    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    out = []
    for name in fields:
        loaded = load_field(ROOT / "examples" / f"{name}.yaml")
        for zi, rule in enumerate(NightFlowRule.for_field(loaded)):
            z = rule.zone
            per_seed = {s: _zone_nights(loaded, zi, s, start, max(train + leak_nights, clean_nights))
                        for s in seeds}
            false = sum(len(_replay_nights(rule, nts[:clean_nights], 0.0, clean_nights))
                        for nts in per_seed.values())
            smallest, took = None, None
            for lps in LEAK_GRID_LPS:
                delays = []
                for nts in per_seed.values():
                    r = [n for n in _replay_nights(rule, nts[:train + leak_nights], lps, train) if n >= train]
                    delays.append(r[0] - train + 1 if r else None)
                if all(d is not None for d in delays):
                    smallest, took = lps, max(d for d in delays if d is not None)
                    break
            base = [len(_replay_nights(rule, nts[:train], 0.0, train)) for nts in per_seed.values()]
            out.append({
                "field": name, "zone": z.id, "connections": z.connections, "mains_km": z.mains_length_km,
                "threshold_m3h_analytic": round(max(
                    rule.cfg.rise_alarm_m3h, rule.cfg.rise_l_per_conn_h * z.connections / 1000,
                    rule.cfg.rise_m3_per_km_h * z.mains_length_km), 3),
                "smallest_leak_lps": smallest,
                "smallest_leak_m3h": round(smallest * 3.6, 3) if smallest is not None else None,
                "l_per_conn_h": round(smallest * 3600 / max(z.connections, 1), 1) if smallest else None,
                "nights_to_raise": took, "false_raises": false, "clean_nights": clean_nights * len(seeds),
                "training_raises": sum(base),
            })
    return out


def leak_table(rows: list[dict[str, object]]) -> str:
    lines = ["| field | zone | connections | mains km | threshold (analytic, m3/h) | smallest leak detected "
             "| per connection | nights to raise | false raises / clean nights |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        leak = (f"{r['smallest_leak_lps']} L/s ({r['smallest_leak_m3h']} m3/h)"
                if r["smallest_leak_lps"] is not None else f"none up to {LEAK_GRID_LPS[-1]} L/s")
        per = f"{r['l_per_conn_h']} L/conn/h" if r["l_per_conn_h"] else "-"
        lines.append(f"| {r['field']} | {r['zone']} | {r['connections']} | {r['mains_km']} | "
                     f"{r['threshold_m3h_analytic']} | {leak} | {per} | {r['nights_to_raise']} | "
                     f"{r['false_raises']} / {r['clean_nights']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- continuous flow on model days

def continuous_flow_false(fields: tuple[str, ...] = LEAK_FIELDS, seeds: tuple[int, ...] = LEAK_SEEDS,
                          days: int = 14, leak_lph: float = 15.0) -> list[dict[str, object]]:
    """Per shipped field: the continuous-flow alarms raised on clean households over ``days``
    days of the physical model's 15-minute meter reads (per seed, from 2026-06-01 00:00 UTC),
    and the delay of a ``leak_lph`` leak added to every watched meter from the start."""
    from datetime import UTC, datetime

    import numpy as np

    from aquavolt.config import load_field
    from aquavolt.rules.api import Sample
    from aquavolt.rules.detectors.continuous import ContinuousFlowRule
    from aquavolt.simulators.demand import Demand, utc_offset_s
    from aquavolt.wire import Quality

    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    out = []
    for name in fields:
        loaded = load_field(ROOT / "examples" / f"{name}.yaml")
        f = loaded.field
        rule = ContinuousFlowRule.from_field(loaded)
        watched = [(i, c.water_meter) for i, c in enumerate(f.customers) if c.water_meter in rule.by_meter]
        idx = np.array([i for i, _ in watched])
        false = raised = 0
        worst = 0.0
        for seed in seeds:
            demand = Demand(f.customers, seed, utc_offset_s(f.timezone, start))
            clean, leaky = rule.init(), rule.init()
            first: dict[str, int] = {}
            for k in range(days * 96 + 1):
                t = start + 900 * k
                m3 = demand.water_meter_m3(demand.at(t).water_l)[idx]
                for (_i, dev), v in zip(watched, m3, strict=True):
                    ts = int(t * 1000)
                    sample = Sample("gw", dev, "volume_m3", float(v), ts, Quality.GOOD)
                    clean, conds = rule.step(clean, sample)
                    false += sum(1 for c in conds if c.active)
                    lv = float(v) + leak_lph * 900 * k / 3600 / 1000
                    leaky, conds = rule.step(leaky, Sample("gw", dev, "volume_m3", lv, ts, Quality.GOOD))
                    for c in conds:
                        if c.active and c.asset not in first:
                            first[c.asset] = ts
            raised += len(first)
            worst = max([worst] + [(ts / 1000 - start) / 3600 for ts in first.values()])
        out.append({"field": name, "households": len(watched), "seeds": len(seeds), "days": days,
                    "false_alarms": false, "leaks_raised": raised, "leaks": len(watched) * len(seeds),
                    "worst_delay_h": round(worst, 1)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="scenario names (default: every shipped one)")
    ap.add_argument("--out", default=str(ROOT / "var" / "detection"))
    ap.add_argument("--from", dest="from_dir", help="only rebuild the table from these reports")
    ap.add_argument("--leak-limit", action="store_true",
                    help="only the smallest zone leak the night-flow detector raises, per shipped zone, "
                    "on the physical model's nights, and the continuous-flow alarms on the model's "
                    "clean households (no processes; about 40 s)")
    args = ap.parse_args()
    if args.leak_limit:
        # this folder holds bench/rules.py, which would shadow the rules package
        sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
        rows = leak_limit()
        print(leak_table(rows))
        print(json.dumps(rows))
        print(json.dumps(continuous_flow_false()))
        return 0
    out = Path(args.from_dir or args.out)
    names = args.names or sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
    if not args.from_dir:
        for n in names:
            print(f"{n}: {run(n, out):.0f} s", flush=True)
    rows = [row(n, out) for n in names]
    text = DOC.read_text() if DOC.exists() else ""
    head, sep, _ = text.partition("<!-- table -->")
    DOC.write_text((head + sep if sep else "# Detection quality from replays\n\n<!-- table -->") + "\n"
                   + table(rows) + "\n")
    print(json.dumps({"scenarios": len(rows), "passed": sum(1 for r in rows if r.get("passed")),
                      "missed": sum(1 for r in rows for e in r.get("expected", []) if not e[2]),  # type: ignore[union-attr]
                      "false_alarms": sum(int(r.get("false_alarms", 0)) for r in rows)}))  # type: ignore[call-overload]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
