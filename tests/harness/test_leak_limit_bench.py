"""bench/leak_limit.py writes scenarios the replay loads, and reads the judge's report per
zone (which leak raised, after how many nights, the clean zones' false raises)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from aquavolt.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("leak_limit", ROOT / "bench" / "leak_limit.py")
assert _spec and _spec.loader
ll = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ll)


def test_generated_scenario_leaks_the_measured_zones_only(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(ll.scenario_text("demo-town", {"zone-a": 0.1, "zone-b": 0.0}, 24, 10))
    sc = load_scenario(path).scenario
    assert [(f.target, f.rate_lps) for f in sc.faults] == [("zone-a", 0.1)]
    assert [(e.condition, e.asset) for e in sc.expect] == [("night_flow_rise", "zone-a")]
    assert sc.history_days == 10 and sc.seed == 24


def test_search_reads_the_reports(tmp_path: Path) -> None:
    """zone-a raised at 0.02 L/s at the end of the second night (the ladder's bottom: done);
    zone-b missed at 0.12, then raised at 0.14 while zone-a, clean, raised falsely."""
    ends = ll.night_ends_ms("demo-town", "zone-a")

    def alarm(asset: str, ts: int, verdict: str) -> dict[str, object]:
        return {"alarm_id": f"{asset}/night_flow_rise", "condition": "night_flow_rise", "asset": asset,
                "transition": "raised", "ts_ms": ts, "at": "x", "verdict": verdict,
                "message": "... estimated leak 0.35 m3/h"}

    reports = [[alarm("zone-a", ends[1], "expected")],
               [alarm("zone-b", ends[1], "expected"), alarm("zone-a", ends[1], "false")]]
    for n, alarms in enumerate(reports):
        out = tmp_path / f"demo-town-{n + 1}"
        out.mkdir()
        (out / "replay-report.json").write_text(json.dumps({"alarms": alarms, "passed": True}))
    args = argparse.Namespace(step=0.02, start={"zone-a": 0.02, "zone-b": 0.12}, max_replays=3,
                              out=str(tmp_path), from_dir=str(tmp_path), clean=True, rerun=False, seed=24, history_days=10, timeout_s=1)
    runs = ll.search("demo-town", args)
    sizes = [{z: o["leak_lps"] for z, o in r["zones"].items()} for r in runs]
    assert sizes == [{"zone-a": 0.02, "zone-b": 0.12}, {"zone-a": 0.0, "zone-b": 0.14}]
    rows = {r["zone"]: r for r in ll.summary("demo-town", runs, model=False)}
    assert rows["zone-a"]["smallest_leak_lps"] == 0.02 and rows["zone-a"]["nights_to_raise"] == 2
    assert (rows["zone-a"]["false_raises"], rows["zone-a"]["clean_nights"]) == (1, 2)
    assert rows["zone-b"]["smallest_leak_lps"] == 0.14 and rows["zone-b"]["missed_lps"] == [0.12]
    assert "0.14 L/s" in ll.table(list(rows.values()))


def test_model_limit_for_the_replay_seed_and_nights() -> None:
    """The detector alone on the model's nights of the replay's seed and dates (no processes)."""
    assert ll.model_limit("meter-line", "zone-a", 24, 10) == 0.08
