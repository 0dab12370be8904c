"""Every query of every panel of every dashboard, with Grafana's macros and variables
substituted as Grafana does (dashboards/macros.py), returns data from the InfluxDB of a real
simulated run: the demo town's day of incidents (the run tests/e2e/conftest.py shares with
test_demo.py), with 370 days of meter history so that the customer board has last year.

After the demo stopped, its InfluxDB is started again on the same data folder (new ports),
the asset positions are written the way the compose stack does (``aquavolt dashboards
assets``), and the time range is the run's simulated one: from the scenario's start to the
last reading stored. tests/dashboards/test_queries.py proves the same on points written per
the schema; this test proves the collector, the rules engine and the simulator write what
the panels read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aquavolt.clock import parse_instant
from aquavolt.config import load_field
from aquavolt.dashboards.build import build_all
from aquavolt.dashboards.macros import TimeRange, dashboard_queries, guards_hold, variable_values
from aquavolt.harness.servers import InfluxDB
from aquavolt.influx import Influx
from aquavolt.settings import InfluxSettings

ROOT = Path(__file__).resolve().parents[2]
FIELD = ROOT / "examples" / "demo-town.yaml"
START_MS = int(parse_instant("2026-06-01T00:00:00Z") * 1000)  # examples/scenarios/demo-day.yaml's start

NO_DATA_IN_A_DAY: dict[str, str] = {
    "water / Daily water balance per zone":
        "the rules engine closes a day's balance an hour after the local midnight that ends it, from "
        "the totalisers read at both midnights: the run starts at 02:00 local time (Africa/Casablanca, "
        "UTC+1 + DST) and ends before the first local day it saw whole is over",
    "gateways / Data lost for good":
        "the demo day loses nothing: the collector writes a data_loss point only for a gap a gateway's "
        "store could no longer fill (tests/collector/test_end_to_end_ack.py writes one, "
        "tests/dashboards/test_queries.py reads it)",
}
"""Panels (board / title) that cannot have data after a one-day run, with the reason."""


def _has_values(series: list[dict[str, Any]]) -> bool:
    return any(v is not None for s in series for row in s["values"] for v in row[1:])


@pytest.fixture(scope="module")
def restarted(demo_day_run, tmp_path_factory) -> InfluxSettings:  # type: ignore[no-untyped-def]
    assert demo_day_run.returncode == 0, demo_day_run.out[-3000:] + demo_day_run.err[-3000:]
    server = InfluxDB(demo_day_run.workdir / "influxdb")
    server.start(timeout_s=60)
    try:
        settings = InfluxSettings.from_url(f"{server.url}/aquavolt")
        env = {**os.environ, "AQUAVOLT_INFLUX_URL": f"{server.url}/aquavolt"}
        env.pop("AQUAVOLT_CLOCK", None)
        subprocess.run([sys.executable, "-m", "aquavolt.cli", "dashboards", "assets", str(FIELD)],
                       env=env, check=True, capture_output=True, timeout=60, cwd=ROOT)
        yield settings
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(1600)  # the shared demo run (tests/e2e/conftest.py) may be set up here
def test_every_panel_query_returns_data_after_a_simulated_day(restarted: InfluxSettings) -> None:
    ix = Influx(restarted)
    last = ix.query(f'SELECT last("value") FROM "telemetry" WHERE time >= {START_MS}ms')
    end_ms = int(last[0]["values"][0][0])
    assert end_ms - START_MS > 20 * 3_600_000, "the run covered less than 20 simulated hours"
    boards = build_all(load_field(FIELD))
    empty, excused, ran = [], [], 0
    for name, board in boards.items():
        rng = TimeRange(START_MS, end_ms, variable_values(board))
        for panel, target in dashboard_queries(board):
            query = rng.for_panel(panel).substitute(target["query"])
            if not guards_hold(query):  # another band of the same query reads this range
                continue
            ran += 1
            if _has_values(ix.query(query)):
                continue
            where = f"{name} / {panel['title']}"
            (excused if where in NO_DATA_IN_A_DAY else empty).append(f"{where} / {target['refId']}: {query}")
    assert ran > 60
    assert not empty, f"{len(empty)} of {ran} queries without data:\n" + "\n".join(empty)
    assert len(excused) == len(NO_DATA_IN_A_DAY), f"excused panels that now have data: {excused}"
