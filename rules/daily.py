"""Daily jobs on event time: the over-consumption check's schedule and the reliability
indices (SAIDI, SAIFI, MAIFI) per feeder.

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

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from aquavolt.rules.detectors.common import LocalTime


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


MAX_QUIET_DAYS = 31
"""Days without interruption written one by one after a gap of event time; beyond, skipped."""


@dataclass
class _Day:
    customer_minutes: float = 0.0  # sustained interruptions: customers x minutes
    sustained_customers: int = 0  # sustained customer interruptions
    momentary_customers: int = 0  # momentary interruption events x customers
    sustained: int = 0  # events
    momentary: int = 0


@dataclass
class ReliabilityBook:
    """IEEE 1366 indices per feeder and local day, from the outages the rules engine closed
    (event time, so a replay writes the same figures). An interruption counts on the day it
    was restored; transformer outages count on their feeder with their own customers::

        SAIDI = sum of customer-minutes of sustained interruptions / customers served
        SAIFI = customers interrupted by sustained interruptions / customers served
        MAIFI = momentary interruption events x customers interrupted / customers served

    Day D is written once event time passes the local midnight that ends it (every feeder,
    zeros included: a day without interruption is a figure too). Pure; the outage detector
    keeps one in its state and drains its lines."""

    tz_name: str
    served: dict[str, int]  # feeder -> customers served
    days: dict[date, dict[str, _Day]] = field(default_factory=dict)
    next_ms: int | None = None  # end of the oldest open day
    first: date | None = None
    _local: LocalTime | None = None

    def _lt(self) -> LocalTime:
        if self._local is None:
            self._local = LocalTime(self.tz_name)
        return self._local

    def start(self, ts_ms: int) -> None:
        """Event time seen first: the day it falls in is the first one reported."""
        if self.first is None:
            self.first = self._lt().day(ts_ms)
            self.next_ms = self._lt().midnight(self.first + timedelta(days=1))

    def add(self, feeder: str, restored_ms: int, customers: int, duration_s: float, sustained: bool) -> None:
        self.start(restored_ms)
        d = self.days.setdefault(self._lt().day(restored_ms), {}).setdefault(feeder, _Day())
        if sustained:
            d.customer_minutes += customers * duration_s / 60
            d.sustained_customers += customers
            d.sustained += 1
        else:
            d.momentary_customers += customers
            d.momentary += 1

    def due(self, now_ms: int) -> list[tuple[str, dict[str, float | int], int]]:
        """(feeder, fields, event time) of each feeder for every day that ended by ``now_ms``.
        After a jump of event time over more than ``MAX_QUIET_DAYS`` days, the quiet days in
        between are not written (only the days with interruptions, and the last day)."""
        out: list[tuple[str, dict[str, float | int], int]] = []
        if self.next_ms is None or self.first is None or now_ms < self.next_ms:
            return out
        lt = self._lt()
        current = lt.day(now_ms)  # in progress: every day before it has ended
        span = (current - self.first).days
        if span <= MAX_QUIET_DAYS:
            days = [self.first + timedelta(days=k) for k in range(span)]
        else:
            last = current - timedelta(days=1)
            days = sorted({d for d in self.days if self.first <= d < current} | {last})
        for day in days:
            per = self.days.pop(day, {})
            end = lt.midnight(day + timedelta(days=1))
            for feeder, n in sorted(self.served.items()):
                d = per.get(feeder, _Day())
                nn = max(n, 1)
                out.append((feeder, {
                    "saidi_min": d.customer_minutes / nn, "saifi": d.sustained_customers / nn,
                    "maifi": d.momentary_customers / nn, "customers_served": n,
                    "sustained": d.sustained, "momentary": d.momentary}, end))
        self.days = {d: v for d, v in self.days.items() if d >= current}
        self.first = current
        self.next_ms = lt.midnight(current + timedelta(days=1))
        return out
