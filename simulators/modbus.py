"""Modbus servers of a simulated field: one pymodbus TCP server per ``modbus_tcp`` bus and
one RTU line per ``modbus_rtu`` bus, on a pseudo-terminal pair.

Both serve a :class:`FieldContext`: several unit ids per bus, registers encoded from the
model at the current tick. A device without power or with ``comm_loss`` does not answer
(the client times out), ``modbus_exception`` answers an exception code, ``slow_device``
answers late. Holes inside a table's span read 0; addresses beyond it answer exception 2.

The RTU line: ``os.openpty()``; the slave side's name is linked at the bus's
``serial_port`` path (parents created) for the edge to open; the simulator speaks RTU on
the master side with pymodbus's own RTU framer and request classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Sequence
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.server import ModbusTcpServer

from aquavolt.field import ModbusRtuBus, ModbusTcpBus
from aquavolt.profiles import RegisterType
from aquavolt.simulators.sim import Simulation

log = logging.getLogger("aquavolt.sim.modbus")

_TABLE = {1: RegisterType.COIL, 5: RegisterType.COIL, 15: RegisterType.COIL,
          2: RegisterType.DISCRETE_INPUT, 4: RegisterType.INPUT,
          3: RegisterType.HOLDING, 6: RegisterType.HOLDING, 16: RegisterType.HOLDING,
          22: RegisterType.HOLDING, 23: RegisterType.HOLDING}


class FieldContext(ModbusServerContext):
    """The devices of one bus, by unit id, served from the simulation."""

    def __init__(self, sim: Simulation, units: dict[int, str], gateway: bool = False) -> None:
        # The parent's constructor builds the deprecated datastore; this context serves
        # requests itself through the "old simulator" path of the 3.x server.
        self.sim = sim
        self.units = units
        self.gateway = gateway
        """A Modbus TCP gateway or data concentrator in front of several units: it answers
        exception 11 (gateway target device failed to respond) for a unit that is silent, at
        once, as such gateways do; a lone device that is silent leaves its client to time out."""
        self.old_simulator = True
        self.simdevices = []
        self.requests = 0

    def device_ids(self) -> list[int]:
        return list(self.units)

    async def _device(self, device_id: int) -> str | ExcCodes:
        dev = self.units.get(device_id)
        if dev is None:
            raise NoSuchIdException(f"no unit {device_id}")
        t = self.sim.sync()
        ans = self.sim.devices.answer(dev, t)
        if ans.mode == "silent":
            if self.gateway:
                return ExcCodes.GATEWAY_NO_RESPONSE
            raise NoSuchIdException(f"unit {device_id} ({dev}) does not answer")
        if ans.mode == "slow":
            await asyncio.sleep(ans.delay_s)
        elif ans.mode == "exception":
            try:
                return ExcCodes(ans.code)
            except ValueError:
                return ExcCodes.DEVICE_FAILURE
        return dev

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        self.requests += 1
        dev = await self._device(device_id)
        if isinstance(dev, ExcCodes):
            return dev
        table = self.sim.image(dev)[_TABLE[func_code]]
        if not table or address < 0 or address + count - 1 > max(table):
            return ExcCodes.ILLEGAL_ADDRESS
        words = [table.get(a, 0) for a in range(address, address + count)]
        if _TABLE[func_code].is_bit:
            return [bool(w) for w in words]
        return words

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        self.requests += 1
        dev = await self._device(device_id)
        if isinstance(dev, ExcCodes):
            return dev
        code = self.sim.write(dev, _TABLE[func_code], address, [int(v) for v in values])
        return ExcCodes(code) if code else None


def units_of(sim: Simulation, bus_id: str, gateway_id: str) -> dict[int, str]:
    gw = sim.loaded.field.gateway(gateway_id)
    return {d.unit_id: d.id for d in gw.devices if d.bus == bus_id and d.unit_id is not None}


async def start_tcp(sim: Simulation, bus: ModbusTcpBus, units: dict[int, str]) -> ModbusTcpServer:
    ctx = FieldContext(sim, units, gateway=len(units) > 1)
    server = ModbusTcpServer(ctx, address=(bus.host, bus.port), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    return server


class RtuLine:
    """A serial bus on a pseudo-terminal: RTU framing on the master side."""

    def __init__(self, sim: Simulation, bus: ModbusRtuBus, units: dict[int, str]) -> None:
        self.bus = bus
        self.ctx = FieldContext(sim, units)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self.slave)
        self.path = Path(bus.serial_port)
        self.framer = FramerRTU(DecodePDU(True))
        self.buffer = b""
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink() or self.path.exists():
            self.path.unlink()
        self.path.symlink_to(self.slave_name)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._readable)
        self.task = asyncio.create_task(self._serve(), name=f"rtu-{self.bus.id}")

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO while nobody has the slave open
            return
        self.queue.put_nowait(data)

    async def _serve(self) -> None:
        while True:
            self.buffer += await self.queue.get()
            while self.buffer:
                used, pdu = self.framer.handleFrame(self.buffer, 0, 0)
                self.buffer = self.buffer[used:]
                if pdu is None:
                    break
                # Each unit of a line answers on its own, as real devices do: a slow unit's
                # late answer must not hold back the next unit's.
                task = asyncio.create_task(self._handle(pdu))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)

    async def _handle(self, pdu: object) -> None:
        dev_id = getattr(pdu, "dev_id", 0)
        if dev_id not in self.ctx.units:
            return  # another device's frame on the line
        try:
            response = await pdu.datastore_update(self.ctx, dev_id)  # type: ignore[attr-defined]
        except NoSuchIdException:
            return  # no power or no link: silence, the master times out
        if response is None:
            return
        if isinstance(response, ExceptionResponse):
            response.dev_id = dev_id
        response.dev_id = dev_id
        with contextlib.suppress(OSError):
            os.write(self.master, self.framer.buildFrame(response))

    async def stop(self) -> None:
        for t in list(self.pending):
            t.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            if self.path.is_symlink():
                self.path.unlink()
