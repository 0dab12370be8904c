"""Hourly and daily rollups made on event time, by the collector that wrote the data.

InfluxDB 1.x continuous queries run on the wall clock and only look at the last interval of
wall time: a simulated field's readings (stamped with simulated time) never fall in it, so
the daily over-consumption check (which reads ``rp_1d.telemetry_1d``) would find nothing.
With ``event_time_rollups`` on, the collector does what the CQ would, with ``SELECT ...
INTO``, for each hour once it has written (and InfluxDB acknowledged) everything up to the
end of that hour plus ``lag_s`` of event time; days are rolled up from the hours (the same
figures: mean weighted by count), once their hours are. The written event time is the
collector's progress (``{prefix}/progress/collector``): nobody else writes to InfluxDB.
"""

from __future__ import annotations

from aquavolt.schema import ROLLUPS, TELEMETRY

STEP_S = {"1h": 3600, "1d": 86400}
"""Rollups made here (the 1-minute one stays with the continuous query)."""


class EventTimeRollups:
    def __init__(self, database: str, lag_s: float = 60.0) -> None:
        self.db = database
        self.lag_s = lag_s
        self.done: dict[str, int] = {}  # interval -> rolled up before this instant (s)
        self.statements = 0

    def statement(self, rp: str, interval: str, meas: str, t0: int, t1: int) -> str:
        if interval == "1d":  # from the hourly rollup
            src_rp, src = next((r, m) for r, _d, i, m in ROLLUPS if i == "1h")
            return (f'SELECT sum("sum") / sum("count") AS "mean", min("min") AS "min", '
                    f'max("max") AS "max", sum("sum") AS "sum", sum("count") AS "count", '
                    f'last("last") AS "last" INTO "{self.db}"."{rp}"."{meas}" '
                    f'FROM "{self.db}"."{src_rp}"."{src}" '
                    f"WHERE time >= {t0}s AND time < {t1}s GROUP BY time({interval}), *")
        return (f'SELECT mean("value") AS "mean", min("value") AS "min", max("value") AS "max", '
                f'sum("value") AS "sum", count("value") AS "count", last("value") AS "last" '
                f'INTO "{self.db}"."{rp}"."{meas}" FROM "{self.db}"."autogen"."{TELEMETRY}" '
                f"WHERE time >= {t0}s AND time < {t1}s GROUP BY time({interval}), *")

    def due(self, written_ms: int, first_ms: int) -> list[tuple[str, int, str]]:
        """(interval, rolled-up-until, statement) for every interval over since the last call,
        given the event time written so far and the first event time seen. Call
        :meth:`ran` with each one that InfluxDB accepted."""
        now = written_ms / 1000 - self.lag_s
        out: list[tuple[str, int, str]] = []
        for rp, _dur, interval, meas in ROLLUPS:
            step = STEP_S.get(interval)
            if step is None:
                continue
            upto = int(now // step * step)
            if interval == "1d":  # only once the hours of those days are rolled up
                upto = min(upto, self.done.get("1h", 0) // step * step)
            since = self.done.setdefault(interval, int(first_ms / 1000 // step * step))
            if upto > since:
                out.append((interval, upto, self.statement(rp, interval, meas, since, upto)))
        return out

    def ran(self, interval: str, upto: int) -> None:
        self.done[interval] = upto
        self.statements += 1
