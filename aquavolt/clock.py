"""Time for every component comes from an injected clock.

``RealClock`` is wall time. ``SimClock`` is simulated time shared by every process of a
run: it maps wall time to simulated time by a start instant, an acceleration and the wall
instant (epoch) at which simulated time began. Processes given the same three numbers
(``AQUAVOLT_CLOCK=start=2026-03-01T00:00:00Z,accel=1000,epoch=1764412345.5``) agree on
"now" without talking to each other, so a replay at 1000x behaves like real time.
The epoch may instead be named by a file (``epoch_file=PATH``) that the harness's launcher
(harness/stack.py) writes once every process is up: until it appears, simulated time holds
one second before the start, so a slow start on a loaded machine costs no simulated time.

Rules never read any clock: they work on the readings' timestamps (event time).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aquavolt.lockstep import LockstepClock

ENV = "AQUAVOLT_CLOCK"


class Clock(Protocol):
    lockstep: bool
    """True for a lockstep clock (time granted by a keeper); what a rule may not read is how
    fast any clock runs: no acceleration here."""

    def now(self) -> float:
        """Seconds since the Unix epoch (simulated or real)."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""

    async def sleep(self, seconds: float, reads_field: bool = True) -> None:
        """Sleep for this many clock seconds."""

    async def sleep_until(self, t: float, reads_field: bool = True) -> None:
        """Sleep until the clock reads ``t`` (at once when it is past). ``reads_field``
        False tells a lockstep clock that the sleeper reads no device when it wakes."""

    def to_wall(self, seconds: float) -> float:
        """Wall seconds that this many clock seconds take."""

    def monotonic(self) -> float:
        """Seconds that pace retries and backoff: wall time where the clock follows the wall,
        simulated time in a lockstep run (where no wall time passes within an instant)."""


class RealClock:
    lockstep = False

    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float, reads_field: bool = True) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, t: float, reads_field: bool = True) -> None:
        await self.sleep(t - self.now())

    def to_wall(self, seconds: float) -> float:
        return seconds

    def monotonic(self) -> float:
        return time.monotonic()

    def spec(self) -> str:
        return "real"


class SimClock:
    """Simulated time: ``start + (wall - epoch) * acceleration``; with ``epoch_file`` and no
    epoch, held at ``start - 1`` until that file holds the epoch (checked every 20 ms)."""

    lockstep = False

    def __init__(self, start: float, acceleration: float, epoch: float | None = None,
                 epoch_file: str | None = None) -> None:
        if acceleration <= 0:
            raise ValueError(f"acceleration must be positive, got {acceleration}")
        self.start = float(start)
        self.acceleration = float(acceleration)
        self.epoch_file = epoch_file if epoch is None else None
        self.epoch = float(epoch) if epoch is not None else (0.0 if epoch_file else time.time())
        self._next_check = 0.0

    @property
    def pending(self) -> bool:
        """True while the epoch file has not been written."""
        if self.epoch_file is None:
            return False
        wall = time.monotonic()
        if wall < self._next_check:
            return True
        self._next_check = wall + 0.02
        try:
            with open(self.epoch_file) as f:
                text = f.read().strip()
            self.epoch = float(text)
        except (OSError, ValueError):
            return True
        self.epoch_file = None
        return False

    def now(self) -> float:
        if self.epoch_file is not None and self.pending:
            return self.start - 1.0
        return self.start + (time.time() - self.epoch) * self.acceleration

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    async def sleep(self, seconds: float, reads_field: bool = True) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.acceleration)

    async def sleep_until(self, t: float, reads_field: bool = True) -> None:
        await self.sleep(t - self.now())

    def to_wall(self, seconds: float) -> float:
        return seconds / self.acceleration

    def monotonic(self) -> float:
        return time.monotonic()

    def spec(self) -> str:
        """The string that gives another process the same clock."""
        start = datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.epoch_file is not None:
            return f"start={start},accel={self.acceleration:g},epoch_file={self.epoch_file}"
        return f"start={start},accel={self.acceleration:g},epoch={self.epoch:.6f}"


def write_epoch_file(path: str, epoch: float) -> None:
    """Release the clocks waiting on ``path`` (written whole, then renamed into place)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{epoch:.6f}\n")
    os.replace(tmp, path)


class ManualClock:
    """A clock that a test moves by hand (``advance``); ``sleep`` advances it."""

    lockstep = False

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float, reads_field: bool = True) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    async def sleep_until(self, t: float, reads_field: bool = True) -> None:
        await self.sleep(t - self.t)

    def to_wall(self, seconds: float) -> float:
        return 0.0

    def monotonic(self) -> float:
        return self.t


def parse_instant(text: str) -> float:
    """ISO 8601 (``2026-03-01T00:00:00Z``) to Unix seconds; naive times are UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_NUM = r"(\d+(?:\.\d+)?)"
_OFFSET = re.compile(rf"^(?:{_NUM}d)?(?:{_NUM}h)?(?:{_NUM}m)?(?:{_NUM}s)?$")


def parse_offset(text: str | float) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"36h"``, ``"1d6h"``."""
    if isinstance(text, int | float):
        return float(text)
    m = _OFFSET.match(text.strip())
    if not text.strip() or m is None:
        raise ValueError(f"{text!r} is not an offset like 90s, 15m, 36h or 1d6h")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def clock_from_spec(spec: str | None, participant: str | None = None,
                    stage: str = "edge") -> RealClock | SimClock | LockstepClock:
    """``real`` (or empty), ``start=ISO,accel=N[,epoch=UNIX | ,epoch_file=PATH]`` (paced by
    the wall), or ``lockstep,start=ISO,run=ID`` (granted by a time keeper over the MQTT of
    ``AQUAVOLT_MQTT_URL``; ``participant`` names this process when it takes part in it)."""
    if not spec or spec.strip() == "real":
        return RealClock()
    if spec.strip().startswith("lockstep"):
        return _lockstep(spec, participant, stage)
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"clock spec {spec!r}: {part!r} is not key=value")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"start", "accel", "epoch", "epoch_file"}
    if unknown or "start" not in fields:
        raise ValueError(f"clock spec {spec!r}: needs start=ISO,accel=N[,epoch=UNIX | ,epoch_file=PATH]")
    epoch = float(fields["epoch"]) if "epoch" in fields else None
    return SimClock(parse_instant(fields["start"]), float(fields.get("accel", "1")), epoch,
                    fields.get("epoch_file"))


def _lockstep(spec: str, participant: str | None, stage: str) -> LockstepClock:
    from aquavolt.lockstep import LockstepClock
    from aquavolt.settings import MqttSettings
    from aquavolt.wire import TimeStage

    fields: dict[str, str] = {}
    for part in spec.split(",")[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"clock spec {spec!r}: {part!r} is not key=value")
        fields[key.strip()] = value.strip()
    if set(fields) != {"start", "run"}:
        raise ValueError(f"clock spec {spec!r}: needs lockstep,start=ISO,run=ID")
    return LockstepClock(parse_instant(fields["start"]), fields["run"], MqttSettings.from_env(),
                         participant, TimeStage(stage))


def clock_from_env(participant: str | None = None,
                   stage: str = "edge") -> RealClock | SimClock | LockstepClock:
    """The clock of ``AQUAVOLT_CLOCK``; in a lockstep run, ``participant`` (``sim``,
    ``edge-{gateway}``) takes part in time advance, and a process without one follows it."""
    return clock_from_spec(os.environ.get(ENV), participant, stage)
