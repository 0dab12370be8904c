"""History backfill into a real InfluxDB: every meter, raw and daily rollup, and live values
that continue it without a jump."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from aquavolt import cli
from aquavolt.clock import SimClock, parse_instant
from aquavolt.influx import Influx
from aquavolt.simulators.backfill import backfill
from aquavolt.simulators.sim import Simulation

END = "2026-06-01T00:00:00Z"
DAILY = ('SELECT "min", "max", "count", "last" FROM "rp_1d"."telemetry_1d" WHERE "device" = '
         '\'wm-c0005\' AND "point" = \'volume_m3\'')


def daily_rows(influx: Influx, influxdb, n: int, timeout_s: float = 30.0) -> list[dict]:
    """The daily rollup rows of ``wm-c0005``, read again until ``n`` are there (the backfill's
    writes were acknowledged; a loaded InfluxDB once answered this read empty), failing after
    ``timeout_s`` with what the server holds: its shards, the rollup's series, its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = influx.rows(DAILY)
        if len(rows) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(rows) != n:
        shards = [s for s in influx.query("SHOW SHARDS") if s.get("name") == influx.s.database]
        series = influx.rows('SHOW SERIES FROM "rp_1d"."telemetry_1d"')
        raise AssertionError(f"{len(rows)} daily rows of {n}: {rows}; shards {shards}; "
                             f"{len(series)} rollup series; influxd log: {influxdb.tail()}")
    return rows


def test_backfill_continues_into_live(demo, influxdb, influx_settings):
    end = parse_instant(END)
    out = backfill(demo, influx_settings, seed=3, end=end, days=3)
    meters = sum(bool(c.water_meter) + bool(c.electricity_meter) for c in demo.field.customers)
    inlets = sum(len(z.inlet_meters) for z in demo.field.water.zones)
    assert out["series"] == 2 * (meters + inlets)
    assert out["points"] == out["series"] * (3 * 24 + 1)
    assert out["daily_points"] == out["series"] * 3  # whole days only, acknowledged
    influx = Influx(influx_settings)
    rows = influx.rows('SELECT last("value") FROM "telemetry" WHERE "device" = \'wm-c0001\' '
                       'AND "point" = \'volume_m3\'')
    live = Simulation(demo, 3, end, SimClock(end, 1e-6))
    assert rows[0]["time"] == end * 1000
    assert rows[0]["last"] == pytest.approx(live.values("wm-c0001")["volume_m3"], abs=1e-9)
    e = influx.rows('SELECT last("value") FROM "telemetry" WHERE "device" = \'em-c0200\' '
                    'AND "point" = \'energy_kwh\'')
    assert e[0]["last"] == pytest.approx(live.values("em-c0200")["energy_kwh"], abs=1e-9)
    z = influx.rows('SELECT last("value") FROM "telemetry" WHERE "device" = \'inlet-zone-b\' '
                    'AND "point" = \'volume_m3\'')
    assert z[0]["last"] == pytest.approx(live.values("inlet-zone-b")["volume_m3"], rel=1e-12)
    # totalisers grow hour after hour; the daily rollup agrees with the raw data
    vols = [r["value"] for r in influx.rows('SELECT "value" FROM "telemetry" WHERE "device" = '
                                            '\'wm-c0005\' AND "point" = \'volume_m3\'')]
    assert len(vols) == 73 and all(b >= a for a, b in itertools.pairwise(vols))
    # whole days only: the day the history ends on is the live run's, rolled up when it ends
    daily = daily_rows(influx, influxdb, 3)
    assert [d["count"] for d in daily] == [24, 24, 24]
    assert daily[-1]["time"] < end * 1000
    assert daily[0]["min"] == vols[0] and daily[0]["last"] == vols[23]
    cqs = influx.query("SHOW CONTINUOUS QUERIES")
    assert any(s.get("name") == influx_settings.database for s in cqs)


def test_old_days_get_only_their_daily_rollup(demo, influxdb, influx_settings):
    """``raw_days``: raw hourly points for the last days only, the daily rollup for every day
    (computed from the same hourly values), batches written by several writers."""
    end = parse_instant(END)
    out = backfill(demo, influx_settings, seed=3, end=end, days=3, raw_days=1)
    assert out["points"] == out["series"] * (24 + 1)
    influx = Influx(influx_settings)
    vols = influx.rows('SELECT "value" FROM "telemetry" WHERE "device" = \'wm-c0005\' AND "point" = '
                       '\'volume_m3\'')
    assert len(vols) == 25 and vols[0]["time"] == (end - 86400) * 1000
    assert out["daily_points"] == out["series"] * 3
    daily = daily_rows(influx, influxdb, 3)
    assert [d["count"] for d in daily] == [24, 24, 24]
    assert daily[2]["last"] == vols[23]["value"]  # 23:00 of the day before the end


def test_command_says_one_summary_line_on_stderr_when_not_a_terminal(demo_path, influx_settings, capsys):
    """``aquavolt sim backfill`` off a terminal: its result on stdout, one progress summary on
    stderr (the bar itself is in tests/kernel/test_progressbar.py), and with
    ``--no-progress`` nothing on stderr."""
    url = f"{influx_settings.url}/{influx_settings.database}"
    argv = ["sim", "backfill", str(demo_path), "--end", END, "--days", "1", "--influx", url]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("aquavolt sim backfill: 964 series, ") and out.count("\n") == 1
    assert re.fullmatch(r"aquavolt sim backfill: model 25 instants in [0-9.]+ s \([0-9.k]+ instants/s\); "
                        r"write 25,064 points in [0-9.]+ s \([0-9.k]+ points/s\)\n", err), err
    assert cli.main([*argv, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("aquavolt sim backfill: 964 series, ") and err == ""
