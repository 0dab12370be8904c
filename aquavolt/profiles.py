"""Device profiles: one YAML file per device model, describing its Modbus register map or
its OPC-UA nodes.

A profile says, per point: its name (with the unit in it), where it lives, how it is
encoded, its engineering unit, and whether it may be written. The edge polls by it, the
simulators serve by it, and the dashboards label by it.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aquavolt.codec import ByteOrder, DataType, register_count

PROFILES_DIR = Path(__file__).parent / "profiles"
"""Where the shipped device profiles live."""

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterType(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bit(self) -> bool:
        return self in (RegisterType.COIL, RegisterType.DISCRETE_INPUT)


class PointClass(StrEnum):
    """How a point's messages rank when a buffer must drop: alarms go last."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    ALARM = "alarm"


class PointBase(Frozen):
    name: Name = Field(description="Point name, unit in the name (flow_lps, voltage_l1_v)")
    description: str = ""
    unit: str = Field("", description="Engineering unit, for display")
    writable: bool = False
    min_value: float | None = Field(None, description="Lowest value a write may set")
    max_value: float | None = Field(None, description="Highest value a write may set")
    point_class: PointClass = PointClass.TELEMETRY
    group: str = Field("default", description="Poll group: points of one group share a rate")
    deadband_abs: float | None = Field(None, description="Report when it moves this much")
    deadband_pct: float | None = Field(None, description="... or this percent of last value")
    kind: Literal["analog", "counter", "discrete"] = Field(
        "analog", description="counter: only grows (totalisers); discrete: states, flags"
    )


class ModbusPoint(PointBase):
    address: int = Field(ge=0, le=0x1FFFF, description="Address as the vendor documents it")
    table: RegisterType = Field(
        RegisterType.HOLDING, description="coil, discrete_input, holding or input"
    )
    type: DataType = DataType.UINT16
    order: ByteOrder | None = Field(None, description="Byte/word order; profile default if unset")
    length: int = Field(1, ge=1, le=64, description="Registers of a string point")
    scale: float = 1.0
    offset: float = 0.0
    bits: dict[int, Name] = Field(
        default_factory=dict, description="Bit field: bit number to flag name"
    )

    @model_validator(mode="after")
    def _check(self) -> ModbusPoint:
        if self.table.is_bit and self.type is not DataType.BOOL:
            raise ValueError(f"a {self.table} point must be of type bool, not {self.type}")
        if self.type is DataType.BITFIELD and any(not 0 <= b <= 15 for b in self.bits):
            raise ValueError("bit numbers of a bitfield are 0..15")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits) this point occupies."""
        if self.table.is_bit:
            return 1
        return register_count(self.type, self.length)


class OpcuaPoint(PointBase):
    node: str = Field(description="Node path relative to the device's node prefix")
    type: Literal["double", "float", "int32", "uint32", "int64", "bool", "string"] = "double"


P = TypeVar("P", bound=PointBase)


def _unique_names(points: list[P]) -> list[P]:
    seen: set[str] = set()
    for p in points:
        if p.name in seen:
            raise ValueError(f"point name {p.name!r} appears twice")
        seen.add(p.name)
    return points


class ProfileBase(Frozen):
    id: Name = Field(description="Profile id, referenced by devices")
    vendor: str = ""
    model: str = ""
    description: str = ""
    documentation: str = Field("", description="Where the register map comes from")


class ModbusProfile(ProfileBase):
    protocol: Literal["modbus"] = "modbus"
    address_base: Literal[0, 1] = Field(
        0, description="1 when the vendor's documents count registers from 1"
    )
    byte_order: ByteOrder = ByteOrder.ABCD
    max_registers_per_read: int = Field(125, ge=1, le=125)
    last_gasp_point: Name | None = Field(
        None, description="Point the meter raises before it loses power"
    )
    points: list[ModbusPoint] = Field(min_length=1)

    _unique = field_validator("points")(_unique_names)

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusProfile:
        spans: dict[RegisterType, list[tuple[int, int, str]]] = {}
        for p in self.points:
            start = p.address - self.address_base
            if start < 0:
                raise ValueError(f"point {p.name}: address {p.address} below base {self.address_base}")
            spans.setdefault(p.table, []).append((start, start + p.count, p.name))
        for reg, items in spans.items():
            items.sort()
            for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(items):
                if s2 < e1:
                    raise ValueError(f"points {n1} and {n2} overlap in {reg} registers at {s2}")
        return self

    def protocol_address(self, point: ModbusPoint) -> int:
        """Address on the wire (0-based PDU address)."""
        return point.address - self.address_base

    def order_of(self, point: ModbusPoint) -> ByteOrder:
        return point.order or self.byte_order

    @cached_property
    def by_name(self) -> dict[str, ModbusPoint]:
        return {p.name: p for p in self.points}


class OpcuaProfile(ProfileBase):
    protocol: Literal["opcua"] = "opcua"
    points: list[OpcuaPoint] = Field(min_length=1)

    _unique = field_validator("points")(_unique_names)

    @cached_property
    def by_name(self) -> dict[str, OpcuaPoint]:
        return {p.name: p for p in self.points}


Profile = Annotated[ModbusProfile | OpcuaProfile, Field(discriminator="protocol")]
