"""A lockstep replay concludes the same on an idle and on a saturated machine.

Three shipped scenarios (water, electricity, a clean run) are each replayed twice in
lockstep: the reference is the e2e pool's replay of the scenario (the one
test_scenarios.py judges; no added load, beside at most ``AQUAVOLT_E2E_JOBS`` - 1 other
runs), the second is started here with both cores saturated by four CPU-bound processes
(``bench/load.py``, started and ended here by PID) while the pool's other runs go on beside
it. Both runs must give the identical list of alarm events in ``replay-report.json``: alarm
id, transition, event time and verdict, for every annunciated alarm and every alarm raised
while hidden. Only the wall time may differ.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
CASES = ["pump-trip", "transformer-outage", "clean-run"]


def _events(name: str, run) -> tuple[list[tuple[str, str, int, str]], str]:  # type: ignore[no-untyped-def]
    out = run.out_path.read_text(errors="replace")
    report = run.folder / "report" / "replay-report.json"
    assert report.exists(), f"replay of {name} wrote no report (exit {run.rc})\n{out[-4000:]}"
    doc = orjson.loads(report.read_bytes())
    events = [(a["alarm_id"], a["transition"], a["ts_ms"], a["verdict"]) for a in doc["alarms"]]
    return events, out


@pytest.fixture
def load():
    """Both cores saturated for as long as the test runs (at most 15 minutes)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), "--procs", "4",
                             "--seconds", "900"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"load: 4 CPU-bound processes")
    yield proc
    proc.terminate()
    proc.wait(30)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", CASES)
def test_lockstep_replay_is_the_same_under_load(name, pool, request):
    idle, out_idle = _events(name, pool.result(name, timeout_s=900))  # the e2e pool's replay
    request.getfixturevalue("load")
    loaded_name = f"{name}-loaded"
    pool.replay_now(SCENARIOS / f"{name}.yaml", loaded_name)
    loaded, out_loaded = _events(name, pool.result(loaded_name, timeout_s=900))
    if name != "clean-run":  # a clean run may rightly raise nothing
        assert idle, f"{name}: no alarm event at all: nothing was compared\n{out_idle[-3000:]}"
    assert loaded == idle, (f"{name}: the loaded run's alarm events differ\n--- idle\n{out_idle[-3000:]}"
                            f"\n--- loaded\n{out_loaded[-3000:]}")
