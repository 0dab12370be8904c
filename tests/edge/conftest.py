"""Real peers for the edge agent's tests: pymodbus servers (TCP, and RTU over a pair of
pseudo-terminals) and an asyncua server, each in its own thread and event loop, with
registers and nodes filled from the device profiles by the kernel's codec.

These are real servers speaking the real protocols; the behaviours the tests need (a slow
device, a device that answers exception codes, a hole in the register map) are settings of
the served data, not patches of the agent.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import threading
import time
import tty
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from aquavolt.codec import Value, apply_scale, decode_raw, encode_raw
from aquavolt.config import load_profiles
from aquavolt.harness.servers import free_port
from aquavolt.profiles import PROFILES_DIR, ModbusPoint, ModbusProfile, OpcuaPoint, OpcuaProfile, RegisterType

sys.path.insert(0, str(Path(__file__).parent))

PROFILES = load_profiles([PROFILES_DIR])
MODBUS_PROFILES = {k: v for k, v in PROFILES.items() if isinstance(v, ModbusProfile)}
OPCUA_PROFILES = {k: v for k, v in PROFILES.items() if isinstance(v, OpcuaProfile)}

_TABLE_OF_FC = {1: RegisterType.COIL, 5: RegisterType.COIL, 15: RegisterType.COIL,
                2: RegisterType.DISCRETE_INPUT, 3: RegisterType.HOLDING, 6: RegisterType.HOLDING,
                16: RegisterType.HOLDING, 22: RegisterType.HOLDING, 23: RegisterType.HOLDING,
                4: RegisterType.INPUT}


def sample_raw(point: ModbusPoint | OpcuaPoint, salt: int = 0) -> Value:
    """A raw value that exercises the point's type (sign, width, fraction)."""
    t = point.type.value if isinstance(point, ModbusPoint) else point.type
    return {
        "int16": -1234 + salt, "uint16": 43210 + salt, "int32": -1234567 + salt,
        "uint32": 3_000_000_000 + salt, "int64": -(2**40) - 5 - salt, "uint64": 2**50 + 7 + salt,
        "float32": 12.5 + salt, "float64": 1234.5678 + salt, "bool": True, "bitfield": 0b101,
        "string": "SN4711", "double": 231.25 + salt, "float": 49.5 + salt,
    }[t]


def expected_value(profile: ModbusProfile, point: ModbusPoint, salt: int = 0) -> Value:
    raw = sample_raw(point, salt)
    if point.table.is_bit:
        return bool(raw)
    regs = encode_raw(raw, point.type, profile.order_of(point), point.length)
    return apply_scale(decode_raw(regs, point.type, profile.order_of(point), point.length), point.scale,
                       point.offset)


@dataclass
class Unit:
    """What one unit id serves."""

    memory: dict[RegisterType, dict[int, int | bool]] = field(default_factory=dict)
    strict: bool = False  # holes in the map answer "illegal data address"
    exception: int | None = None  # answer this exception code to everything
    delay_s: float = 0.0  # a slow device

    def fill(self, profile: ModbusProfile, salt: int = 0) -> Unit:
        for p in profile.points:
            addr = profile.protocol_address(p)
            table = self.memory.setdefault(p.table, {})
            if p.table.is_bit:
                table[addr] = bool(sample_raw(p, salt))
                continue
            regs = encode_raw(sample_raw(p, salt), p.type, profile.order_of(p), p.length)
            for i, r in enumerate(regs):
                table[addr + i] = r
        return self

    def set_point(self, profile: ModbusProfile, name: str, raw: Value) -> None:
        p = profile.by_name[name]
        addr = profile.protocol_address(p)
        if p.table.is_bit:
            self.memory.setdefault(p.table, {})[addr] = bool(raw)
            return
        for i, r in enumerate(encode_raw(raw, p.type, profile.order_of(p), p.length)):
            self.memory.setdefault(p.table, {})[addr + i] = r


class PeerContext(ModbusServerContext):
    """A datastore answering from :class:`Unit` objects (unknown unit ids get no answer)."""

    def __init__(self, units: dict[int, Unit]) -> None:  # no super().__init__: own storage
        self.units = units
        self.simdevices = []
        self.old_simulator = True

    def _unit(self, device_id: int) -> Unit:
        from pymodbus.exceptions import NoSuchIdException

        if device_id not in self.units:
            raise NoSuchIdException(f"no unit {device_id}")
        return self.units[device_id]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        unit = self._unit(device_id)
        if unit.delay_s:
            await asyncio.sleep(unit.delay_s)
        if unit.exception is not None:
            return ExcCodes(unit.exception)
        mem = unit.memory.get(_TABLE_OF_FC[func_code], {})
        if unit.strict and any(a not in mem for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        bits = _TABLE_OF_FC[func_code].is_bit
        return [mem.get(a, False if bits else 0) for a in range(address, address + count)]

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        unit = self._unit(device_id)
        if unit.exception is not None:
            return ExcCodes(unit.exception)
        mem = unit.memory.setdefault(_TABLE_OF_FC[func_code], {})
        for i, v in enumerate(values):
            mem[address + i] = v
        return None

    def device_ids(self) -> list[int]:
        return list(self.units)


class LoopThread:
    """An event loop in a thread of its own (servers must not share the agent's loop)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class ModbusTcpPeer:
    def __init__(self, units: dict[int, Unit], port: int | None = None) -> None:
        self.units = units
        self.port = port or free_port()
        self.lt = LoopThread(f"modbus-tcp-{self.port}")
        self.server: Any = None
        self.start()

    def start(self) -> None:
        async def _start() -> Any:
            server = ModbusTcpServer(PeerContext(self.units), address=("127.0.0.1", self.port),
                                     ignore_missing_devices=True)
            await server.serve_forever(background=True)
            return server

        self.server = self.lt.run(_start())

    def stop(self) -> None:
        if self.server is not None:
            self.lt.run(self.server.shutdown())
            self.server = None

    def close(self) -> None:
        self.stop()
        self.lt.close()


class PtyBridge:
    """Two pseudo-terminals whose master sides are wired together: a null-modem cable.
    The server opens ``server_path``, the agent ``client_path`` (e.g. a symlink to it)."""

    def __init__(self) -> None:
        self.m1, s1 = os.openpty()
        self.m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        self.server_path, self.client_path = os.ttyname(s1), os.ttyname(s2)
        self._slaves = (s1, s2)
        self._stop = False
        self.log: list[tuple[bool, float]] = []
        """(from the server, monotonic time) of every chunk handed across"""
        self.thread = threading.Thread(target=self._pump, name="pty-bridge", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        peers = {self.m1: self.m2, self.m2: self.m1}
        while not self._stop:
            ready, _, _ = select.select(list(peers), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    # taken after the read and before the write: a request was sent before
                    # it, an answer is received after it
                    self.log.append((fd == self.m1, time.monotonic()))
                    os.write(peers[fd], data)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for fd in (self.m1, self.m2, *self._slaves):
            os.close(fd)


class ModbusRtuPeer:
    def __init__(self, units: dict[int, Unit], baud: int = 19200, parity: str = "N") -> None:
        self.units = units
        self.bridge = PtyBridge()
        self.lt = LoopThread("modbus-rtu")

        async def _start() -> Any:
            server = ModbusSerialServer(PeerContext(units), port=self.bridge.server_path, baudrate=baud,
                                        parity=parity, ignore_missing_devices=True)
            await server.serve_forever(background=True)
            return server

        self.server = self.lt.run(_start())

    def close(self) -> None:
        self.lt.run(self.server.shutdown())
        self.lt.close()
        self.bridge.close()


@pytest.fixture
def peers() -> Iterator[list[Any]]:
    """Collects peers a test starts and closes them at its end."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.close()
