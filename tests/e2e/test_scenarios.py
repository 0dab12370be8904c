"""Every shipped scenario passes its replay: ``aquavolt replay`` as a subprocess, the same
separate processes as in production (simulator, one edge agent per gateway, collector, rules
engine) on their own Mosquitto and InfluxDB. On failure the printed report (expected alarms
raised or MISSED, false alarms) is the assertion message. ``demo-day`` is replayed by
test_demo.py, which runs it through ``aquavolt demo``.

Replays run in lockstep (as fast as their slowest participant allows, the same alarms on an
idle or a loaded machine); the replays of the collected scenarios are runs of the e2e pool
(tests/e2e/conftest.py: ``AQUAVOLT_E2E_JOBS``, default 2, at a time, beside the demo day,
started in test order as slots free up); each test waits for its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
SLOW = {"clean-run", "clean-week", "zone-leak", "over-consumption", "customer-leak"}
"""Over about 30 s of wall time: still run, marked so a quick pass can leave them out."""


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
@pytest.mark.timeout(900)  # lockstep: a loaded machine makes a replay slower, never different
def test_scenario_replay_passes(scenario, pool):
    run = pool.result(scenario.stem)
    tmp_path = run.folder
    out = (tmp_path / "replay.out").read_text(errors="replace")
    print(f"{scenario.stem}: replay took {run.wall_s:.0f} s wall")
    assert run.rc == 0, (
        f"replay of {scenario.name} failed (exit {run.rc}, {run.wall_s:.0f} s)\n{out[-8000:]}\n"
        f"{_logs_tail(tmp_path)}")
    report = orjson.loads((tmp_path / "report" / "replay-report.json").read_bytes())
    assert report["passed"] and report["misses"] == 0 and report["false_alarms"] == 0
    assert all(e["ok"] and e["delay_s"] is not None for e in report["expected"])
    suite = ET.parse(tmp_path / "report" / "replay-junit.xml").getroot()
    assert suite.get("failures") == "0" and suite.findall("testcase")


def test_clean_run_forbids_every_fault_alarm():
    """The clean week judges leak, burst, outage and over-consumption alarms as false."""
    from aquavolt.scenario import load_scenario

    sc = load_scenario(ROOT / "examples" / "scenarios" / "clean-run.yaml")
    forbidden = {f.condition for f in sc.scenario.forbid if f.asset is None}
    assert {"night_flow_rise", "burst", "continuous_flow", "outage", "over_consumption"} <= forbidden
    assert not sc.scenario.faults


@pytest.mark.parametrize("name", ["small-town", "meter-line"])
def test_small_fields_pass_check(name):
    """The small fields the fast scenarios run on pass ``aquavolt check`` and keep the demo
    town's ids for what they contain."""
    from aquavolt.config import load_field

    done = subprocess.run([sys.executable, "-m", "aquavolt.cli", "check", str(ROOT / "examples" / f"{name}.yaml")],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0 and ": ok: field " in done.stdout, done.stdout + done.stderr
    small = load_field(ROOT / "examples" / f"{name}.yaml").field
    town = load_field(ROOT / "examples" / "demo-town.yaml").field
    assert {c.id for c in small.customers} < {c.id for c in town.customers}
    assert small.gateways and all(g.devices for g in small.gateways)
    used = {(sc.stem, load_scenario_field(sc)) for sc in SCENARIOS}
    assert any(field == f"{name}.yaml" for _, field in used), f"no scenario runs on {name}"


def load_scenario_field(path: Path) -> str:
    from aquavolt.scenario import load_scenario

    return Path(load_scenario(path).scenario.field).name


@pytest.mark.timeout(900)
def test_wrong_expectation_fails_with_a_clear_report(pool):
    run = pool.result("wrong-expectation")  # the pool's: --grace-s 60
    tmp_path, out = run.folder, run.out_path.read_text(errors="replace")
    assert run.rc == 1, out
    assert "MISSED  outage on feeder-1: not raised by 2026-06-01T00:50:00Z" in out, out
    assert "  FAIL (" in out and " missed, " in out
    report = orjson.loads((tmp_path / "report" / "replay-report.json").read_bytes())
    assert report["passed"] is False and report["misses"] >= 1
    suite = ET.parse(tmp_path / "report" / "replay-junit.xml").getroot()
    assert int(suite.get("failures")) == (report["misses"] + (1 if report["false_alarms"] else 0)
                                          + report["limit_failures"])
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert "not raised by 2026-06-01T00:50:00Z" in failed["expect outage on feeder-1"].get("message")


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
