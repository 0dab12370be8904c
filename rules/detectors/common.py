"""Shared pieces of the detectors: local time of the field, sample checks, percentiles,
and the metrics side-output.

Detector states are plain mutable objects owned by the engine: ``step``/``tick`` update
the state they are given and return it. They never read a clock or do I/O, so replaying
the same samples gives the same conditions at the same event times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from aquavolt.wire import Quality
from rules.api import Sample

STATUS_POINT = "_status"
"""Device status fed as a sample: ``Sample(gw, device, "_status", "comm_fail"|"online"|"offline", ts)``."""

S = TypeVar("S")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class MetricsRule(Protocol[S]):
    """A detector that also produces InfluxDB line-protocol lines (``water_balance``,
    ``night_flow``). After ``step``/``tick`` the engine calls ``drain_lines(state)`` and
    writes what it returns (precision ms)."""

    def drain_lines(self, state: S) -> tuple[S, list[str]]: ...


class LocalTime:
    """Calendar arithmetic in the field's time zone (night windows, days, slots)."""

    def __init__(self, tz_name: str) -> None:
        self.tz = ZoneInfo(tz_name)

    def dt(self, ts_ms: int) -> datetime:
        return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(self.tz)

    def hour(self, ts_ms: int) -> float:
        d = self.dt(ts_ms)
        return d.hour + d.minute / 60 + d.second / 3600

    def day(self, ts_ms: int) -> date:
        return self.dt(ts_ms).date()

    def at(self, day: date, hour: float) -> int:
        """Epoch ms of ``hour`` (fractional) on a local ``day``."""
        base = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return int((base + timedelta(hours=hour)).timestamp() * 1000)

    def midnight(self, day: date) -> int:
        return self.at(day, 0.0)

    def slot(self, ts_ms: int, slot_s: int) -> int:
        """Index of the time-of-day slot (local time) of ``slot_s`` seconds."""
        d = self.dt(ts_ms)
        return (d.hour * 3600 + d.minute * 60 + d.second) // slot_s


def number(sample: Sample) -> float | None:
    """The sample's value as a float when it is a good, finite number; else None."""
    if sample.quality is not Quality.GOOD:
        return None
    v = sample.value
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def flag(sample: Sample) -> bool | None:
    """A good boolean-like value (true/false, 1/0)."""
    if sample.quality is not Quality.GOOD or sample.value is None or isinstance(sample.value, str):
        return None
    return bool(sample.value)


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``pct`` in 0..100."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * pct / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rounded(x: float, digits: int = 3) -> float:
    return round(x, digits)


@dataclass
class Lines:
    """Line-protocol lines waiting for the engine (``drain_lines``)."""

    pending: list[str]

    def take(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


def iso(day: date) -> str:
    return day.isoformat()


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (rounded(v) if isinstance(v, float) else v) for k, v in d.items()}
