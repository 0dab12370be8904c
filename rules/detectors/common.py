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

from aquavolt.rules.api import Sample
from aquavolt.wire import Quality

STATUS_POINT = "_status"
"""Device status fed as a sample: ``Sample(gw, device, "_status", "comm_fail"|"online"|"offline", ts)``."""

S = TypeVar("S")

SQRT3 = math.sqrt(3.0)


def feeder_phase_nominal_v(line_to_line_v: float) -> float:
    """The phase-to-neutral nominal of an MV feeder. ``feeder_nominal_voltage_v`` is the
    line-to-line voltage (11 kV), while the feeder bays report phase voltages
    (``voltage_l1_v`` .. ``voltage_l3_v``, about 11000 / sqrt(3) = 6351 V)."""
    return line_to_line_v / SQRT3

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class MetricsRule(Protocol[S]):
    """A detector that also produces InfluxDB line-protocol lines (``water_balance``,
    ``night_flow``). After ``step``/``tick`` the engine calls ``drain_lines(state)`` and
    writes what it returns (precision ms)."""

    def drain_lines(self, state: S) -> tuple[S, list[str]]: ...


class LocalTime:
    """Calendar arithmetic in the field's time zone (night windows, days, slots).

    Detectors ask it for every sample, so the bounds of the latest local day are kept: on a
    day of 24 hours (no clock change) the local hour and slot are plain arithmetic."""

    def __init__(self, tz_name: str) -> None:
        self.tz = ZoneInfo(tz_name)
        self._lo = self._hi = 0  # [lo, hi): epoch ms of the cached local day
        self._day = date.min
        self._midnights: dict[date, int] = {}

    def dt(self, ts_ms: int) -> datetime:
        return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(self.tz)

    def _bounds(self, ts_ms: int) -> date:
        if not self._lo <= ts_ms < self._hi:
            d = self.dt(ts_ms).date()
            self._lo, self._hi, self._day = self.midnight(d), self.midnight(d + timedelta(days=1)), d
        return self._day

    def hour(self, ts_ms: int) -> float:
        self._bounds(ts_ms)
        if self._hi - self._lo == 86_400_000:
            return ((ts_ms - self._lo) // 1000) / 3600
        d = self.dt(ts_ms)
        return d.hour + d.minute / 60 + d.second / 3600

    def day(self, ts_ms: int) -> date:
        return self._bounds(ts_ms)

    def at(self, day: date, hour: float) -> int:
        """Epoch ms of ``hour`` (fractional) on a local ``day``."""
        base = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return int((base + timedelta(hours=hour)).timestamp() * 1000)

    def midnight(self, day: date) -> int:
        m = self._midnights.get(day)
        if m is None:
            if len(self._midnights) > 4096:
                self._midnights.clear()
            m = self._midnights[day] = self.at(day, 0.0)
        return m

    def slot(self, ts_ms: int, slot_s: int) -> int:
        """Index of the time-of-day slot (local time) of ``slot_s`` seconds."""
        self._bounds(ts_ms)
        if self._hi - self._lo == 86_400_000:
            return ((ts_ms - self._lo) // 1000) // slot_s
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
