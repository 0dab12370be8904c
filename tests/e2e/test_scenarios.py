"""Every shipped scenario passes its replay: ``aquavolt replay`` as a subprocess, the same
separate processes as in production (simulator, one edge agent per gateway, collector, rules
engine) on their own Mosquitto and InfluxDB. On failure the printed report (expected alarms
raised or MISSED, false alarms) is the assertion message. ``demo-day`` is replayed by
test_demo.py, which runs it through ``aquavolt demo``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
SLOW = {"clean-week", "zone-leak", "over-consumption", "customer-leak", "burst", "sensor-stuck"}
"""Over about 40 s of simulated run: still run, marked so a quick pass can leave them out."""


def replay(scenario: Path, tmp_path: Path, *extra: str, timeout_s: float = 600.0
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "aquavolt.cli", "replay", str(scenario), "--workdir", str(tmp_path / "run"),
         "--report-dir", str(tmp_path / "report"), *extra],
        check=False, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    return done, time.monotonic() - t0


def _logs_tail(tmp_path: Path) -> str:
    out = []
    for log in sorted((tmp_path / "run" / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln][:5]
        out.append(f"--- {log.name}: {len(lines)} lines; errors: " + (" | ".join(bad) or "none"))
    return "\n".join(out)


@pytest.mark.parametrize("scenario", [
    pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW else [], id=p.stem)
    for p in SCENARIOS if p.stem != "demo-day"])
def test_scenario_replay_passes(scenario, tmp_path):
    done, wall_s = replay(scenario, tmp_path)
    print(f"{scenario.stem}: replay took {wall_s:.0f} s wall")
    assert done.returncode == 0, (
        f"replay of {scenario.name} failed (exit {done.returncode}, {wall_s:.0f} s)\n{done.stdout[-6000:]}\n"
        f"{done.stderr[-3000:]}\n{_logs_tail(tmp_path)}")
    report = orjson.loads((tmp_path / "report" / "replay-report.json").read_bytes())
    assert report["passed"] and report["misses"] == 0 and report["false_alarms"] == 0
    assert all(e["ok"] and e["delay_s"] is not None for e in report["expected"])
    suite = ET.parse(tmp_path / "report" / "replay-junit.xml").getroot()
    assert suite.get("failures") == "0" and suite.findall("testcase")


def test_clean_run_forbids_every_fault_alarm():
    """The clean week judges leak, burst, outage and over-consumption alarms as false."""
    from simulators.scenario import load_scenario

    sc = load_scenario(ROOT / "examples" / "scenarios" / "clean-week.yaml")
    forbidden = {f.condition for f in sc.scenario.forbid if f.asset is None}
    assert {"night_flow_rise", "burst", "continuous_flow", "outage", "over_consumption"} <= forbidden
    assert not sc.scenario.faults


def test_wrong_expectation_fails_with_a_clear_report(tmp_path):
    done, _ = replay(Path(__file__).parent / "scenarios" / "wrong-expectation.yaml", tmp_path,
                     "--grace-s", "60")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISSED  outage on feeder-1: not raised by 2026-06-01T02:00:00Z" in done.stdout, done.stdout
    assert "missed, 0 false)" in done.stdout and "  FAIL (" in done.stdout
    report = orjson.loads((tmp_path / "report" / "replay-report.json").read_bytes())
    assert report["passed"] is False and report["misses"] >= 1
    suite = ET.parse(tmp_path / "report" / "replay-junit.xml").getroot()
    assert int(suite.get("failures")) == report["misses"]
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert "not raised by 2026-06-01T02:00:00Z" in failed["expect outage on feeder-1"].get("message")


def test_ci_sample_replays_shipped_scenarios_with_known_flags():
    """examples/ci/replay.yml (shown in the README) names real scenarios and replay flags."""
    import yaml

    wf = yaml.safe_load((ROOT / "examples" / "ci" / "replay.yml").read_text())
    job = wf["jobs"]["replay"]
    for s in job["strategy"]["matrix"]["scenario"]:
        assert (ROOT / s).is_file(), s
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "./run setup" in runs and "aquavolt replay" in runs and "--report-dir reports" in runs
    help_text = subprocess.run([sys.executable, "-m", "aquavolt.cli", "replay", "--help"], check=True,
                               capture_output=True, text=True).stdout
    for flag in ("--workdir", "--report-dir"):
        assert flag in runs and flag in help_text
    paths = [step["with"]["path"] for step in job["steps"] if "upload-artifact" in step.get("uses", "")]
    assert "reports/" in paths
