"""Lockstep replay pace: simulated seconds per wall second, idle and with both cores loaded.

    .venv/bin/python bench/replay.py            # about 5 minutes: four replays
    .venv/bin/python bench/replay.py --quick    # the first 2 days / 6 hours only

Replays, in lockstep as fast as the slowest participant allows, the meter line's clean week
(``examples/scenarios/clean-week.yaml``) and a clean day of the small town
(``bench/scenarios/small-town-clean-day.yaml``), each once idle and once with four CPU-bound
processes running (``bench/load.py``). The ratio is the simulated span over the wall time of
the time keeper's run (history and process start-up are not in it: the replay prints both).
``identical_under_load`` is true when both loaded runs gave the same alarm events as the
idle ones. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {"meter_line": ROOT / "examples" / "scenarios" / "clean-week.yaml",
         "small_town": ROOT / "bench" / "scenarios" / "small-town-clean-day.yaml"}
QUICK = {"meter_line": "2d", "small_town": "6h"}
RATIO = re.compile(r"lockstep: ([\d,]+) instants, ([\d,]+) simulated s in ([\d.]+) wall s")


def replay(scenario: Path, folder: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "aquavolt.cli", "replay", str(scenario), "--workdir",
                           str(folder / "run"), "--report-dir", str(folder / "report")],
                          check=False, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    m = RATIO.search(done.stdout)
    if m is None:
        raise SystemExit(f"no lockstep figures in the replay's output:\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-2000:]}")
    steps, sim_s, wall_s = int(m[1].replace(",", "")), float(m[2].replace(",", "")), float(m[3])
    doc = json.loads((folder / "report" / "replay-report.json").read_text())
    events = [(a["alarm_id"], a["transition"], a["ts_ms"]) for a in doc["alarms"]]
    return {"instants": steps, "simulated_s": sim_s, "wall_s": wall_s, "ratio": round(sim_s / wall_s),
            "passed": doc["passed"], "events": events}


def shortened(scenario: Path, duration: str, folder: Path) -> Path:
    text = re.sub(r"(?m)^duration: .*$", f"duration: {duration}", scenario.read_text())
    text = re.sub(r"(?m)^field: (.*)$", lambda m: f"field: {(scenario.parent / m[1]).resolve()}", text)
    out = folder / scenario.name
    out.write_text(text)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter spans (2 days, 6 hours)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aquavolt-bench-replay-"))
    out: dict[str, object] = {}
    runs: dict[str, dict[str, object]] = {}
    for name, sc in CASES.items():
        path = shortened(sc, QUICK[name], base) if args.quick else sc
        runs[name] = replay(path, base / f"{name}-idle")
        print(f"{name} idle: {runs[name]['ratio']}x ({runs[name]['instants']} instants)", flush=True)
    load = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), "--procs", "4",
                             "--seconds", "1200"], stdout=subprocess.DEVNULL)
    try:
        for name, sc in CASES.items():
            path = shortened(sc, QUICK[name], base) if args.quick else sc
            runs[f"{name}_loaded"] = replay(path, base / f"{name}-loaded")
            print(f"{name} loaded: {runs[f'{name}_loaded']['ratio']}x", flush=True)
    finally:
        load.terminate()
        load.wait(30)
    for key, r in runs.items():
        out[f"{key.replace('_loaded', '')}_ratio{'_loaded' if key.endswith('_loaded') else ''}"] = r["ratio"]
        out[f"{key}_wall_s"] = r["wall_s"]
        out[f"{key}_passed"] = r["passed"]
    out["identical_under_load"] = all(runs[n]["events"] == runs[f"{n}_loaded"]["events"] for n in CASES)
    out["loaded_share"] = {n: round(int(runs[f"{n}_loaded"]["ratio"]) / max(1, int(runs[n]["ratio"])), 2)
                           for n in CASES}
    out["quick"] = args.quick
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
