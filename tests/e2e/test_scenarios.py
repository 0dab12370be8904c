"""Every shipped scenario passes its replay: ``aquavolt replay`` as a subprocess, the same
separate processes as in production (simulator, one edge agent per gateway, collector, rules
engine) on their own Mosquitto and InfluxDB. On failure the printed report (expected alarms
raised or MISSED, false alarms) is the assertion message. ``demo-day`` is replayed by
test_demo.py, which runs it through ``aquavolt demo``.

Replays run in lockstep (as fast as their slowest participant allows, the same alarms on an
idle or a loaded machine); the replays of the collected scenarios run ``AQUAVOLT_E2E_JOBS``
(default 2) at a time, started in test order as slots free up; each test waits for its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
SLOW = {"clean-run", "clean-week", "zone-leak", "over-consumption", "customer-leak"}
"""Over about 30 s of wall time: still run, marked so a quick pass can leave them out."""
JOBS = max(1, int(os.environ.get("AQUAVOLT_E2E_JOBS", "2")))


def _argv(scenario: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aquavolt.cli", "replay", str(scenario), "--workdir", str(tmp_path / "run"),
            "--report-dir", str(tmp_path / "report"), *extra]


def replay(scenario: Path, tmp_path: Path, *extra: str, timeout_s: float = 600.0
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    done = subprocess.run(_argv(scenario, tmp_path, *extra), check=False, capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT)
    return done, time.monotonic() - t0


@dataclass
class _Run:
    scenario: Path
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    t0: float = 0.0
    wall_s: float = 0.0
    rc: int | None = None


class ReplayPool:
    """Replays started ``jobs`` at a time (subprocesses known by PID, no threads), in order."""

    def __init__(self, scenarios: list[Path], base: Path, jobs: int) -> None:
        self.runs = {p.stem: _Run(p, base / p.stem) for p in scenarios}
        self.queue = list(self.runs)
        self.jobs = jobs

    def _tick(self) -> None:
        running = [r for r in self.runs.values() if r.proc is not None and r.rc is None]
        for r in list(running):
            if r.proc is not None and r.proc.poll() is not None:
                r.rc, r.wall_s = r.proc.returncode, time.monotonic() - r.t0
                (r.folder / "wall_s").write_text(f"{r.wall_s:.0f}")
                running.remove(r)
        while self.queue and len(running) < self.jobs:
            r = self.runs[self.queue.pop(0)]
            r.folder.mkdir(parents=True, exist_ok=True)
            with open(r.folder / "replay.out", "wb") as out:
                r.proc = subprocess.Popen(_argv(r.scenario, r.folder), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=ROOT)
            r.t0 = time.monotonic()
            running.append(r)

    def result(self, name: str, timeout_s: float = 880.0) -> _Run:
        run = self.runs[name]
        if run.proc is None and name in self.queue:  # asked first: start it now
            self.queue.remove(name)
            self.queue.insert(0, name)
        deadline = time.monotonic() + timeout_s
        while run.rc is None:
            self._tick()
            if time.monotonic() > deadline and run.proc is not None:
                run.proc.kill()  # SIGKILL: the replay's own children then die with its servers' stop
                run.proc.wait()
                run.rc, run.wall_s = -9, time.monotonic() - run.t0
            time.sleep(0.2)
        return run

    def stop(self) -> None:
        for r in self.runs.values():
            if r.proc is not None and r.proc.poll() is None:
                r.proc.terminate()
                r.proc.wait(30)


@pytest.fixture(scope="module")
def pool(request, tmp_path_factory):
    wanted = [item.callspec.params["scenario"] for item in request.session.items
              if item.originalname == "test_scenario_replay_passes" and hasattr(item, "callspec")]
    p = ReplayPool(wanted, tmp_path_factory.mktemp("replays"), JOBS)
    yield p
    p.stop()


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


def test_wrong_expectation_fails_with_a_clear_report(tmp_path):
    done, _ = replay(Path(__file__).parent / "scenarios" / "wrong-expectation.yaml", tmp_path,
                     "--grace-s", "60")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISSED  outage on feeder-1: not raised by 2026-06-01T00:50:00Z" in done.stdout, done.stdout
    assert "  FAIL (" in done.stdout and " missed, " in done.stdout
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
