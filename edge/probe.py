"""``aquavolt edge probe``: read raw registers from a device and print every interpretation
(each type, each of the four byte orders), for the field engineer with a new meter and no
documentation."""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from aquavolt.codec import all_interpretations

_FUNCS = {"holding": "read_holding_registers", "input": "read_input_registers"}


async def read_raw(client: Any, table: str, address: int, count: int, unit: int) -> list[int]:
    if not await client.connect():
        raise OSError("cannot connect")
    try:
        resp = await getattr(client, _FUNCS[table])(address, count=count, device_id=unit)
    finally:
        client.close()
    if resp.isError():
        raise OSError(f"device answered exception code {getattr(resp, 'exception_code', '?')}")
    return list(resp.registers)


def format_table(address: int, registers: list[int]) -> str:
    lines = [f"registers from {address}: " + " ".join(f"{r:04x}" for r in registers)]
    for start in range(len(registers)):
        rows = all_interpretations(registers[start:])
        lines.append(f"-- at {address + start} (offset {start})")
        for dtype, order, value in rows:
            if dtype == "string" and start:
                continue
            lines.append(f"   {dtype:8} {order:5} {value!r}")
    return "\n".join(lines)


def probe(host: str | None, port: int, serial: str | None, baud: int, parity: str, unit: int,
          table: str, address: int, count: int, timeout_s: float) -> str:
    async def run() -> list[int]:  # pymodbus clients are made on the running loop
        if serial:
            client: Any = AsyncModbusSerialClient(serial, baudrate=baud, parity=parity, timeout=timeout_s,
                                                  retries=0)
        else:
            client = AsyncModbusTcpClient(host or "127.0.0.1", port=port, timeout=timeout_s, retries=0)
        return await read_raw(client, table, address, count, unit)

    return format_table(address, asyncio.run(run()))
