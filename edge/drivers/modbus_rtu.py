"""Modbus RTU over a serial line: one worker per port, one frame on the wire at a time,
with the inter-frame silence (3.5 characters unless configured) between frames.

Several unit ids share the line. A dead device costs one timeout per try, and its circuit
breaker (in the agent) keeps it from being tried on every poll, so it cannot stall the bus.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient

from aquavolt.edge.drivers.modbus_common import ModbusDriverBase
from aquavolt.edge.planner import DEFAULT_MAX_GAP
from aquavolt.field import Device, ModbusRtuBus
from aquavolt.profiles import ModbusProfile

SPIN_S = 0.0002
"""The longest remainder of a silence waited by yielding to the loop instead of a timer."""


def inter_frame_delay_s(bus: ModbusRtuBus) -> float:
    if bus.inter_frame_delay_s is not None:
        return bus.inter_frame_delay_s
    bits = 1 + bus.byte_size + (0 if bus.parity == "N" else 1) + bus.stop_bits
    # 3.5 characters; the standard fixes 1.75 ms above 19200 baud
    return 0.00175 if bus.baud_rate > 19200 else 3.5 * bits / bus.baud_rate


class ModbusRtuDriver(ModbusDriverBase):
    def __init__(self, bus: ModbusRtuBus, profiles: dict[str, ModbusProfile],
                 max_gap: int = DEFAULT_MAX_GAP) -> None:
        super().__init__(profiles, max_gap)
        self.bus = bus
        self.delay_s = inter_frame_delay_s(bus)
        self._lock = asyncio.Lock()
        self._last_frame = 0.0
        self._client: AsyncModbusSerialClient | None = None

    async def start(self) -> None:
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _execute(self, device: Device, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            if self._client is None or not self._client.connected:
                if self._client is not None:
                    self._client.close()
                self._client = AsyncModbusSerialClient(
                    self.bus.serial_port, baudrate=self.bus.baud_rate, parity=self.bus.parity,
                    stopbits=self.bus.stop_bits, bytesize=self.bus.byte_size, timeout=self.bus.timeout_s,
                    retries=self.bus.retries, reconnect_delay=0, name=f"rtu-{self.bus.id}",
                )
                if not await self._client.connect():
                    raise OSError(f"cannot open serial port {self.bus.serial_port}")
            await self._silence()
            try:
                return await getattr(self._client, method)(*args, **kwargs)
            finally:
                self._last_frame = time.monotonic()

    async def _silence(self) -> None:
        """Keeps the line quiet for the inter-frame delay since the last frame, and not a
        millisecond more: asyncio's timers wake on whole milliseconds (epoll rounds a timeout
        up), so a plain sleep of 3.5 characters at 19,200 baud 8E1 (2.005 ms) lasts up to 3 ms
        (2.4 on average here, against 2.2 for a sleep of 2 ms). Whole milliseconds are slept; a
        remainder under ``SPIN_S`` is spent yielding to the loop (other tasks run meanwhile), a
        longer one in one more sleep."""
        end = self._last_frame + self.delay_s
        while (left := end - time.monotonic()) > 0:
            if left >= 0.001:
                await asyncio.sleep(math.floor(left * 1000) / 1000)
            else:
                await asyncio.sleep(0 if left <= SPIN_S else left)
