"""Modbus RTU over a serial line: one worker per port, one frame on the wire at a time,
with the inter-frame silence (3.5 characters unless configured) between frames.

Several unit ids share the line. A dead device costs one timeout per try, and its circuit
breaker (in the agent) keeps it from being tried on every poll, so it cannot stall the bus.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient

from aquavolt.edge.drivers.modbus_common import ModbusDriverBase
from aquavolt.edge.planner import DEFAULT_MAX_GAP
from aquavolt.field import Device, ModbusRtuBus
from aquavolt.profiles import ModbusProfile


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
            wait = self._last_frame + self.delay_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await getattr(self._client, method)(*args, **kwargs)
            finally:
                self._last_frame = time.monotonic()
