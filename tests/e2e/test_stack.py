"""The stack's own duties on a simulated clock, against a real InfluxDB: the hourly and
daily rollups that InfluxDB's wall-clock continuous queries cannot compute for simulated
days (the over-consumption check reads the daily one), once the collector has written them."""

from __future__ import annotations

from aquavolt.clock import parse_instant
from aquavolt.influx import Influx
from aquavolt.schema import continuous_queries
from harness.stack import SimRollups


def test_simulated_days_are_rolled_up_once_over(influx_settings):
    influx = Influx(influx_settings)
    influx.execute(continuous_queries(influx_settings.database))
    t0 = int(parse_instant("2026-06-01T00:00:00Z"))
    # A totaliser read every 15 minutes for two days and a half: 1 m3 per hour.
    lines = [f"telemetry,device=wm-1,gateway=gw,point=volume_m3 value={k / 4},quality=192i {t0 + k * 900}"
             for k in range(4 * 60)]
    influx.write([ln + "000" for ln in lines])  # ms precision
    # The collector says it has written everything up to day 3, 06:00 (its progress on MQTT).
    pump = SimRollups(influx, t0, lambda: t0 + 2 * 86400 + 6 * 3600, lag_s=60.0)
    assert pump.pump() == 2
    assert pump.pump() == 0  # nothing new is over
    days = influx.rows('SELECT "last", "count", "mean", "min", "max" FROM "rp_1d"."telemetry_1d" '
                       'WHERE point = \'volume_m3\'')
    assert [(d["count"], d["last"]) for d in days] == [(96, 95 / 4), (96, 191 / 4)]
    # rolled up from the hours, with the same figures as from the readings
    assert abs(days[0]["mean"] - 95 / 8) < 1e-9 and (days[1]["min"], days[1]["max"]) == (24.0, 191 / 4)
    hours = influx.rows('SELECT count("last") FROM "rp_1h"."telemetry_1h"')
    assert hours[0]["count"] == 2 * 24 + 5  # day 3 up to 05:00: the 05:00 hour ends inside the lag
