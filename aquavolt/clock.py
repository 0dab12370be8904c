"""Time for every component comes from an injected clock.

``RealClock`` is wall time. ``SimClock`` is simulated time shared by every process of a
run: it maps wall time to simulated time by a start instant, an acceleration and the wall
instant (epoch) at which simulated time began. Processes given the same three numbers
(``AQUAVOLT_CLOCK=start=2026-03-01T00:00:00Z,accel=1000,epoch=1764412345.5``) agree on
"now" without talking to each other, so a replay at 1000x behaves like real time.

Rules never read any clock: they work on the readings' timestamps (event time).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Protocol

ENV = "AQUAVOLT_CLOCK"


class Clock(Protocol):
    acceleration: float

    def now(self) -> float:
        """Seconds since the Unix epoch (simulated or real)."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""

    async def sleep(self, seconds: float) -> None:
        """Sleep for this many clock seconds."""

    def to_wall(self, seconds: float) -> float:
        """Wall seconds that this many clock seconds take."""


class RealClock:
    acceleration = 1.0

    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def to_wall(self, seconds: float) -> float:
        return seconds

    def spec(self) -> str:
        return "real"


class SimClock:
    """Simulated time: ``start + (wall - epoch) * acceleration``."""

    def __init__(self, start: float, acceleration: float, epoch: float | None = None) -> None:
        if acceleration <= 0:
            raise ValueError(f"acceleration must be positive, got {acceleration}")
        self.start = float(start)
        self.acceleration = float(acceleration)
        self.epoch = time.time() if epoch is None else float(epoch)

    def now(self) -> float:
        return self.start + (time.time() - self.epoch) * self.acceleration

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.acceleration)

    def to_wall(self, seconds: float) -> float:
        return seconds / self.acceleration

    def spec(self) -> str:
        """The string that gives another process the same clock."""
        start = datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"start={start},accel={self.acceleration:g},epoch={self.epoch:.6f}"


class ManualClock:
    """A clock that a test moves by hand (``advance``); ``sleep`` advances it."""

    acceleration = 1.0

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def to_wall(self, seconds: float) -> float:
        return 0.0


def parse_instant(text: str) -> float:
    """ISO 8601 (``2026-03-01T00:00:00Z``) to Unix seconds; naive times are UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def clock_from_spec(spec: str | None) -> RealClock | SimClock:
    """``real`` (or empty) or ``start=ISO,accel=N[,epoch=UNIX]``."""
    if not spec or spec.strip() == "real":
        return RealClock()
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"clock spec {spec!r}: {part!r} is not key=value")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"start", "accel", "epoch"}
    if unknown or "start" not in fields:
        raise ValueError(f"clock spec {spec!r}: needs start=ISO,accel=N[,epoch=UNIX]")
    epoch = float(fields["epoch"]) if "epoch" in fields else None
    return SimClock(parse_instant(fields["start"]), float(fields.get("accel", "1")), epoch)


def clock_from_env() -> RealClock | SimClock:
    return clock_from_spec(os.environ.get(ENV))
