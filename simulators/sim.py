"""One simulation: a field, its model, its faults and a clock; register images per device.

Servers ask it for a device's registers (:meth:`Simulation.image`), encoded with the
kernel's :mod:`aquavolt.codec`, the same code the edge decodes with.
"""

from __future__ import annotations

import math
from typing import Any

from aquavolt.clock import Clock
from aquavolt.codec import DataType, Value, decode_raw, encode_raw, remove_scale
from aquavolt.config import LoadedField
from aquavolt.faults import FaultSpec
from aquavolt.profiles import ModbusPoint, ModbusProfile, RegisterType
from aquavolt.simulators.devices import Devices
from aquavolt.simulators.faults import FaultBook
from aquavolt.simulators.model import FieldModel

_INT_RANGE = {
    DataType.INT16: (-(2**15), 2**15 - 1), DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1), DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1), DataType.UINT64: (0, 2**64 - 1),
    DataType.BITFIELD: (0, 2**16 - 1),
}

Image = dict[RegisterType, dict[int, int]]


def encode_point(prof: ModbusProfile, p: ModbusPoint, value: Value) -> list[int]:
    """Registers (or one bit as 0/1) of an engineering value, clamped into the type's range."""
    if p.table.is_bit or p.type is DataType.BOOL:
        return encode_raw(bool(value), DataType.BOOL)
    if p.type is DataType.STRING:
        return encode_raw(str(value)[: 2 * p.length], p.type, prof.order_of(p), p.length)
    raw = remove_scale(value, p.type, p.scale, p.offset)
    if p.type in _INT_RANGE:
        lo, hi = _INT_RANGE[p.type]
        fval = float(raw)
        raw = 0 if math.isnan(fval) else min(max(round(fval), lo), hi)
    return encode_raw(raw, p.type, prof.order_of(p), p.length)


def to_python(v: Any) -> Value:
    """numpy scalars to plain Python values."""
    item = getattr(v, "item", None)
    return item() if item is not None else v  # type: ignore[no-any-return]


class Simulation:
    def __init__(self, loaded: LoadedField, seed: int, start: float,
                 clock: Clock, step_s: float = 10.0) -> None:
        self.loaded = loaded
        self.clock = clock
        self.seed = seed
        self.faults = FaultBook(loaded)
        self.model = FieldModel(loaded, seed, start, self.faults, step_s)
        self.devices = Devices(self.model)
        self._images: dict[str, tuple[int, int, Image]] = {}
        self._encoded: dict[str, dict[str, tuple[Value, list[int]]]] = {}
        self.model.advance(start)

    def now(self) -> float:
        return self.clock.now()

    def sync(self) -> float:
        """Advance the model to the clock; return the model's current instant."""
        t = self.now()
        if t >= self.model.start:
            self.model.advance(t)
        return t

    def add_fault(self, spec: FaultSpec, origin: float | None = None) -> dict[str, Any]:
        fault = self.faults.add(spec, self.now() if origin is None else origin)
        return fault.to_json(self.now())

    def values(self, device: str) -> dict[str, Value]:
        return {k: to_python(v) for k, v in self.devices.values(device).items()}

    def image(self, device: str) -> Image:
        """The device's registers at the current tick (cached per tick and fault change)."""
        tick = self.model.tick
        hit = self._images.get(device)
        if hit is not None and hit[0] == tick and hit[1] == self.faults.version:
            return hit[2]
        prof = self.loaded.profile_of(device)
        assert isinstance(prof, ModbusProfile)
        vals = self.values(device)
        img: Image = {t: {} for t in RegisterType}
        memo = self._encoded.setdefault(device, {})
        for p in prof.points:
            v = vals[p.name]
            last = memo.get(p.name)
            if last is not None and last[0] == v and type(last[0]) is type(v):
                regs = last[1]  # unchanged since the last encoding (flags, slot flows, strings)
            else:
                regs = encode_point(prof, p, v)
                memo[p.name] = (v, regs)
            base = prof.protocol_address(p)
            table = img[p.table]
            for k, r in enumerate(regs):
                table[base + k] = r
        self._images[device] = (tick, self.faults.version, img)
        return img

    def write(self, device: str, table: RegisterType, address: int, values: list[int]) -> int:
        """Apply a Modbus write; 0 when done, else a Modbus exception code."""
        prof = self.loaded.profile_of(device)
        assert isinstance(prof, ModbusProfile)
        for p in prof.points:
            if p.table is not table or prof.protocol_address(p) != address:
                continue
            if not p.writable:
                return 2
            if len(values) != p.count:
                return 3
            value = bool(values[0]) if p.table.is_bit else decode_raw(
                list(values), p.type, prof.order_of(p), p.length)
            if not isinstance(value, bool | str):
                value = value * p.scale + p.offset
                if (p.min_value is not None and value < p.min_value) or (
                        p.max_value is not None and value > p.max_value):
                    return 3
            self._apply(device, p.name, value)
            self._images.pop(device, None)
            self.devices._cache.pop(device, None)
            return 0
        return 2

    def _apply(self, device: str, point: str, value: Value) -> None:
        role, pump = self.devices.role.get(device, ("", None))
        if role != "pump":
            return
        st = self.model.pumps[pump]
        if point == "run_command":
            st.enabled = bool(value)
            if not st.enabled:
                st.running = False
        elif point == "speed_setpoint_pct" and isinstance(value, int | float):
            st.speed_pct = float(value)
