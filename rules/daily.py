"""The daily over-consumption check, scheduled on event time.

:class:`DailySchedule` is pure: given the engine's horizon (the event time released to the
rules, ``Core.horizon_ms``; not the newest timestamp seen, which may still be reordered), it
says which day's check is due.
The check of day D (``OverConsumptionCheck.check(D, ts)``, period ending D-1) is due at
``max(local midnight of D, UTC midnight of D) + check_delay_s``: the field's calendar day
has begun and InfluxDB has had time to write the 1d rollup of the UTC day D-1. Its
conditions carry that due time as their event time, so a replay gives the same alarms.

At the first horizon after a start the latest due day is checked (a catch-up: the
last check is not remembered across restarts; a repeated verdict changes nothing, since
the alarm manager keeps one alarm per (customer, over_consumption) and the SMS queue one
message per event). When the horizon jumps several days only the latest day is checked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from rules.detectors.common import LocalTime


class DailySchedule:
    def __init__(self, tz_name: str, delay_s: float) -> None:
        self.local = LocalTime(tz_name)
        self.delay_ms = int(delay_s * 1000)
        self.last: date | None = None  # the latest day checked (or being checked)

    def due_ms(self, day: date) -> int:
        """Event time at which the check of ``day`` is due."""
        utc_midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        return max(self.local.midnight(day), utc_midnight) + self.delay_ms

    def due(self, horizon_ms: int) -> tuple[date, int] | None:
        """(day, event time) of the check due at this horizon and not done yet, else None."""
        if horizon_ms <= 0:
            return None
        day = self.local.day(horizon_ms)
        if horizon_ms < self.due_ms(day):
            day -= timedelta(days=1)
        if self.last is not None and day <= self.last:
            return None
        return day, self.due_ms(day)
