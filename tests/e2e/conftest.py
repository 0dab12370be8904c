"""One run of ``aquavolt demo`` (the demo town with its day of incidents), shared by the
tests that check it (tests/e2e/test_demo.py) and the dashboards' queries against its data
(tests/e2e/test_dashboards_live.py): the run is the expensive part, so it happens once."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELD = ROOT / "examples" / "demo-town.yaml"
DEMO_DAY = ROOT / "examples" / "scenarios" / "demo-day.yaml"
DEMO_SIM_DURATION = "1d2h"
"""The whole demo day, in lockstep: the same run on an idle or a busy machine, only slower."""
HISTORY_DAYS = 370
"""Enough meter history for the customer dashboard's same period last year (364 days back,
weekdays aligned): older days are written as daily rollups only, so this costs little more
than the scenario's 45 days."""
RUN_TIMEOUT_S = 1500
"""Tests using :func:`demo_day_run` mark themselves ``timeout(1600)``: the run is set up
within the first one's timeout (about 5 minutes idle, at most three times that loaded)."""


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    out: str
    err: str
    workdir: Path
    """The demo's work folder: InfluxDB's data stay in ``influxdb/`` once the demo stopped."""


@pytest.fixture(scope="session")
def demo_day_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo-day") / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "aquavolt.cli", "demo", str(FIELD), "--scenario", str(DEMO_DAY),
         "--sim-duration", DEMO_SIM_DURATION, "--acceleration", "100000", "--plain", "--plain-every-s", "30",
         "--backfill-days", str(HISTORY_DAYS), "--workdir", str(workdir)],
        check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    return DemoRun(done.returncode, done.stdout, done.stderr, workdir)
