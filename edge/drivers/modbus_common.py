"""What Modbus TCP and RTU share: planned reads, splits on "illegal data address",
decoding with the kernel's codec, and writes with read-back."""

from __future__ import annotations

from typing import Any

from pymodbus.exceptions import ModbusException

from aquavolt.codec import Value, encode_raw, remove_scale
from aquavolt.edge.drivers.base import PointResult
from aquavolt.edge.planner import DEFAULT_MAX_GAP, Plan, Request, decode_request
from aquavolt.errors import DeviceError, DeviceException, DeviceTimeout
from aquavolt.field import Device
from aquavolt.profiles import ModbusPoint, ModbusProfile, PointBase, RegisterType

ILLEGAL_ADDRESS = 2
GATEWAY_CODES = {10: "gateway path unavailable", 11: "gateway target device failed to respond"}
"""Exceptions a Modbus gateway or concentrator answers for the device behind it: that device
is not reachable (a loss of communication), not a device answering garbage."""

_READ = {  # table -> (client method, answers bits)
    RegisterType.COIL: ("read_coils", True),
    RegisterType.DISCRETE_INPUT: ("read_discrete_inputs", True),
    RegisterType.HOLDING: ("read_holding_registers", False),
    RegisterType.INPUT: ("read_input_registers", False),
}


class ModbusDriverBase:
    """Subclasses provide ``_execute(device, method, *args, **kwargs)``."""

    def __init__(self, profiles: dict[str, ModbusProfile], max_gap: int = DEFAULT_MAX_GAP) -> None:
        self.profiles = profiles
        self.max_gap = max_gap
        self.plans: dict[tuple[str, str], Plan] = {}
        self.requests = 0

    async def _execute(self, device: Device, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _call(self, device: Device, method: str, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        try:
            resp = await self._execute(device, method, *args, device_id=device.unit_id or 1, **kwargs)
        except (ModbusException, OSError, TimeoutError) as exc:
            raise DeviceTimeout(device.id, f"no answer: {exc}") from exc
        if resp.isError():
            code = int(getattr(resp, "exception_code", 0) or 0)
            if code in GATEWAY_CODES:  # the gateway answers; the device behind it does not
                raise DeviceTimeout(device.id, f"no answer: {GATEWAY_CODES[code]} (gateway exception "
                                               f"{code} to {method})")
            raise DeviceException(device.id, code, f"{method} exception code {code}")
        return resp

    async def _read_request(self, device: Device, req: Request) -> list[int] | list[bool]:
        method, is_bit = _READ[req.table]
        resp = await self._call(device, method, req.start, count=req.count)
        raw = resp.bits if is_bit else resp.registers
        if len(raw) < req.count:
            raise DeviceException(device.id, 0, f"short answer: {len(raw)} of {req.count}")
        return list(raw[: req.count])

    def plan(self, device: Device, group: str, points: list[ModbusPoint]) -> Plan:
        key = (device.id, group)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = Plan.build(self.profiles[device.profile], points, self.max_gap)
        return plan

    async def read(self, device: Device, group: str, points: list[PointBase]) -> dict[str, PointResult]:
        profile = self.profiles[device.profile]
        mpoints = [p for p in points if isinstance(p, ModbusPoint)]
        plan = self.plan(device, group, mpoints)
        out: dict[str, PointResult] = {}
        todo = list(plan.requests)
        answered = False
        while todo:
            req = todo.pop(0)
            try:
                raw = await self._read_request(device, req)
            except DeviceException as exc:
                answered = True
                if exc.code == ILLEGAL_ADDRESS and len(req.points) > 1:
                    todo[0:0] = plan.split(req)
                    continue
                for p in req.points:
                    out[p.name] = exc
                continue
            answered = True
            for name, value in plan.decoder(req)(raw).items():
                if type(value) is str and value.startswith("!") and _is_error_marker(profile, name):
                    out[name] = DeviceError(device.id, value[1:])
                else:
                    out[name] = value
        if not answered:
            raise DeviceTimeout(device.id, "no request answered")
        return out

    async def write(self, device: Device, point: PointBase, value: Value) -> None:
        assert isinstance(point, ModbusPoint)
        profile = self.profiles[device.profile]
        addr = profile.protocol_address(point)
        if point.table is RegisterType.COIL:
            await self._call(device, "write_coil", addr, bool(value))
            return
        if point.table is not RegisterType.HOLDING:
            raise DeviceError(device.id, f"{point.name} is in {point.table}, which cannot be written")
        raw = remove_scale(value, point.type, point.scale, point.offset)
        regs = encode_raw(raw, point.type, profile.order_of(point), point.length)
        if len(regs) == 1:
            await self._call(device, "write_register", addr, regs[0])
        else:
            await self._call(device, "write_registers", addr, regs)

    async def read_point(self, device: Device, point: ModbusPoint) -> PointResult:
        """One point on its own (command read-back), outside the poll plans."""
        profile = self.profiles[device.profile]
        req = Plan.build(profile, [point]).requests[0]
        raw = await self._read_request(device, req)
        return decode_request(profile, req, raw)[point.name]


def _is_error_marker(profile: ModbusProfile, name: str) -> bool:
    """A decoded '!…' string is an error unless the point is a string point."""
    return profile.by_name[name].type.value != "string"
