"""Modbus TCP: a pool of connections per server, at most ``max_concurrent_requests``.

One pymodbus client serialises its requests, so a TCP-to-RTU converter with several unit ids
gets up to ``max_concurrent_requests`` connections; a plain device normally needs one.
Connections are opened on first use and re-opened after a failure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from aquavolt.edge.drivers.modbus_common import ModbusDriverBase
from aquavolt.edge.planner import DEFAULT_MAX_GAP
from aquavolt.field import Device, ModbusTcpBus
from aquavolt.profiles import ModbusProfile


class ModbusTcpDriver(ModbusDriverBase):
    def __init__(self, bus: ModbusTcpBus, profiles: dict[str, ModbusProfile], devices: int = 1,
                 max_gap: int = DEFAULT_MAX_GAP) -> None:
        super().__init__(profiles, max_gap)
        self.bus = bus
        self.size = max(1, min(bus.max_concurrent_requests, devices))
        self._idle: asyncio.Queue[AsyncModbusTcpClient] | None = None
        self._all: list[AsyncModbusTcpClient] = []

    def _client(self) -> AsyncModbusTcpClient:
        client = AsyncModbusTcpClient(
            self.bus.host, port=self.bus.port, timeout=self.bus.timeout_s, retries=0, reconnect_delay=0,
            name=f"tcp-{self.bus.id}",
        )
        self._all.append(client)
        return client

    async def start(self) -> None:
        self._idle = asyncio.Queue()
        for _ in range(self.size):
            self._idle.put_nowait(self._client())

    async def close(self) -> None:
        for c in self._all:
            c.close()
        self._all.clear()

    async def _execute(self, device: Device, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._idle is None:
            await self.start()
        assert self._idle is not None
        client = await self._idle.get()
        try:
            if not client.connected:
                await asyncio.wait_for(client.connect(), self.bus.timeout_s)
                if not client.connected:
                    raise OSError(f"cannot connect to {self.bus.host}:{self.bus.port}")
            return await getattr(client, method)(*args, **kwargs)
        except BaseException:
            client.close()  # a fresh connection next time: no late answer can be mistaken
            raise
        finally:
            self._idle.put_nowait(client)
