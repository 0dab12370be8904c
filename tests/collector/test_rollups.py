"""Event-time rollups, against a real InfluxDB: the hourly and daily rollups of a simulated
field are made by the collector once it has written each interval (InfluxDB's wall-clock
continuous queries never see simulated days); days come from the hours with the same
figures as from the readings."""

from __future__ import annotations

import asyncio

from aquavolt.clock import parse_instant
from aquavolt.collector.rollups import EventTimeRollups
from aquavolt.collector.writer import InfluxWriter
from aquavolt.influx import Influx
from aquavolt.schema import continuous_queries


async def _run_due(writer: InfluxWriter, rollups: EventTimeRollups, written_ms: int, first_ms: int) -> int:
    ran = 0
    while due := rollups.due(written_ms, first_ms):
        for interval, upto, stmt in due:
            assert await writer.query(stmt) is None, stmt
            rollups.ran(interval, upto)
            ran += 1
    return ran


def test_simulated_days_are_rolled_up_once_written(influx_settings):
    influx = Influx(influx_settings)
    influx.execute(continuous_queries(influx_settings.database))
    t0 = int(parse_instant("2026-06-01T00:00:00Z"))
    # A totaliser read every 15 minutes for two days and a half: 1 m3 per hour.
    lines = [f"telemetry,device=wm-1,gateway=gw,point=volume_m3 value={k / 4},quality=192i {t0 + k * 900}"
             for k in range(4 * 60)]
    influx.write([ln + "000" for ln in lines])  # ms precision
    rollups = EventTimeRollups(influx_settings.database, lag_s=60.0)

    async def upto(written_s: int) -> list[int]:
        async with InfluxWriter(influx_settings) as writer:
            return [await _run_due(writer, rollups, written_s * 1000, t0 * 1000) for _ in range(2)]

    # written up to day 3, 06:00: two whole days, and day 3's hours up to 05:00 (the lag)
    assert asyncio.run(upto(t0 + 2 * 86400 + 6 * 3600)) == [2, 0]  # hours then days, once
    days = influx.rows('SELECT "last", "count", "mean", "min", "max" FROM "rp_1d"."telemetry_1d" '
                       'WHERE point = \'volume_m3\'')
    assert [(d["count"], d["last"]) for d in days] == [(96, 95 / 4), (96, 191 / 4)]
    # rolled up from the hours, with the same figures as from the readings
    assert abs(days[0]["mean"] - 95 / 8) < 1e-9 and (days[1]["min"], days[1]["max"]) == (24.0, 191 / 4)
    hours = influx.rows('SELECT count("last") FROM "rp_1h"."telemetry_1h"')
    assert hours[0]["count"] == 2 * 24 + 5
    # the third day once written past its end and the lag
    assert asyncio.run(upto(t0 + 3 * 86400 + 120)) == [2, 0]
    third = influx.rows('SELECT "count" FROM "rp_1d"."telemetry_1d" WHERE point = \'volume_m3\'')
    assert [d["count"] for d in third] == [96, 96, 48]


def test_a_rollup_has_its_own_timeout_not_the_writes(influx_settings):
    """A rollup reads an hour of the whole field: with the writes' timeout (10 s) the demo
    day's first hour timed out on a busy machine, and each retry, covering more hours, too. A
    write timeout far below any query's time shows it: the rollup still runs."""
    influx = Influx(influx_settings)
    influx.execute(continuous_queries(influx_settings.database))
    t0 = int(parse_instant("2026-06-01T00:00:00Z"))
    influx.write([f"telemetry,device=wm-1,gateway=gw,point=volume_m3 value={k / 4},quality=192i {(t0 + k * 900) * 1000}"
                  for k in range(8)])
    rollups = EventTimeRollups(influx_settings.database, lag_s=60.0)
    (interval, _upto, stmt), = rollups.due((t0 + 7200) * 1000, t0 * 1000)

    async def run() -> tuple[str | None, str | None]:
        async with InfluxWriter(influx_settings.model_copy(update={"timeout_s": 0.0001})) as writer:
            return await writer.query(stmt), await writer.query(stmt, 120.0)

    bounded, own = asyncio.run(run())
    assert bounded is not None and "no answer within 0.0001 s" in bounded  # the writes' timeout
    assert own is None and interval == "1h"
    assert influx.rows('SELECT count("last") FROM "rp_1h"."telemetry_1h"')[0]["count"] == 1  # 00:00-01:00
