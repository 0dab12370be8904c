"""What every driver offers the agent, and the circuit breaker shared by all of them.

A driver owns one bus (a TCP server, a serial line, an OPC-UA endpoint). The agent calls
``read`` once per device per poll group, and ``write`` for commands. ``read`` returns a
value, or a :class:`DeviceError` for each point that failed on its own; it raises
:class:`DeviceError` when the whole device failed (no answer, connection lost).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

from aquavolt.backoff import Backoff
from aquavolt.codec import Value
from aquavolt.errors import DeviceError
from aquavolt.field import Device
from aquavolt.profiles import ModbusProfile, OpcuaPoint, OpcuaProfile, PointBase

PointResult = Value | DeviceError


class Driver(Protocol):
    async def start(self) -> None:
        """Open what the driver needs (connections are also opened lazily)."""

    async def close(self) -> None:
        """Close every connection; idempotent."""

    async def read(self, device: Device, group: str, points: list[PointBase]) -> dict[str, PointResult]:
        """Read the points of one poll group of a device."""

    async def write(self, device: Device, point: PointBase, value: Value) -> None:
        """Write one engineering value (the caller checked it is allowed)."""

    async def read_point(self, device: Device, point: Any) -> PointResult:
        """Read one point on its own (a command's read-back)."""


@dataclass(frozen=True)
class DeviceSpec:
    """A device with its profile, as a driver gets it."""

    device: Device
    profile: ModbusProfile | OpcuaProfile


def opcua_points(profile: OpcuaProfile) -> list[OpcuaPoint]:
    return list(profile.points)


class Breaker:
    """Per-device circuit breaker: after a failure the device is left alone for a jittered,
    exponentially growing, capped time (wall seconds, the kernel's :class:`Backoff`), then
    tried once again (half open)."""

    def __init__(self, base_s: float = 1.0, max_s: float = 60.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.open_until = 0.0
        self._backoff = Backoff(base_s, max(base_s, max_s), rng)

    @property
    def failures(self) -> int:
        return self._backoff.failures

    def allow(self, now: float) -> bool:
        return now >= self.open_until

    def success(self) -> None:
        self._backoff.reset()
        self.open_until = 0.0

    def failure(self, now: float) -> float:
        """Record a failure; return the wall seconds the breaker stays open."""
        wait = self._backoff.next()
        self.open_until = now + wait
        return wait

    @property
    def is_open(self) -> bool:
        return self.failures > 0
