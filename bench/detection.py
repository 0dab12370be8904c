"""Detection quality from scenario replays (issue 7): for each fault-kind scenario, detected
or not, detection delay (event time), false alarms, wall time, and the command.

    .venv/bin/python bench/detection.py                      # every shipped scenario (~15 min)
    .venv/bin/python bench/detection.py burst pump-trip       # some of them
    .venv/bin/python bench/detection.py --from var/detection  # table from earlier reports only
    .venv/bin/python bench/detection.py --from /tmp/pytest-of-$USER/pytest-N/replays0  # the test suite's

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="scenario names (default: every shipped one)")
    ap.add_argument("--out", default=str(ROOT / "var" / "detection"))
    ap.add_argument("--from", dest="from_dir", help="only rebuild the table from these reports")
    args = ap.parse_args()
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
