"""The fault spec: the faults the simulator injects, as a scenario, ``POST /faults`` or the
``{prefix}/sim/fault`` MQTT topic give them.

A fault is a JSON/YAML object (``FaultSpec``); the same shape serves the scenario file,
``POST /faults`` and the ``{prefix}/sim/fault`` MQTT topic. Its ``at`` is an offset from
the scenario start (scenario) or from now (live), or an ISO instant; ``duration`` is an
offset too (none: until removed). The simulator's runtime state (the fault book) lives in
simulators/faults.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from aquavolt.clock import parse_instant, parse_offset
from aquavolt.config import LoadedField
from aquavolt.errors import AquavoltError
from aquavolt.field import Id
from aquavolt.profiles import Frozen, ModbusProfile


class FaultError(AquavoltError):
    """A fault names an unknown target, or is malformed."""


class FaultKind(StrEnum):
    ZONE_LEAK = "zone_leak"
    BURST = "burst"
    CUSTOMER_LEAK = "customer_leak"
    OVER_CONSUMPTION = "over_consumption"
    FEEDER_OUTAGE = "feeder_outage"
    TRANSFORMER_OUTAGE = "transformer_outage"
    COMM_LOSS = "comm_loss"
    PUMP_TRIP = "pump_trip"
    PUMP_STUCK_ON = "pump_stuck_on"
    SENSOR_STUCK = "sensor_stuck"
    SENSOR_SPIKE = "sensor_spike"
    SENSOR_DRIFT = "sensor_drift"
    MODBUS_EXCEPTION = "modbus_exception"
    SLOW_DEVICE = "slow_device"


TARGET_OF = {
    FaultKind.ZONE_LEAK: "zone", FaultKind.BURST: "zone",
    FaultKind.CUSTOMER_LEAK: "customer", FaultKind.OVER_CONSUMPTION: "customer",
    FaultKind.FEEDER_OUTAGE: "feeder", FaultKind.TRANSFORMER_OUTAGE: "transformer",
    FaultKind.PUMP_TRIP: "pump", FaultKind.PUMP_STUCK_ON: "pump",
}
"""What ``target`` names, per kind; the others name a device."""

SENSOR_KINDS = (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_SPIKE, FaultKind.SENSOR_DRIFT)

def iso_text(v: object) -> object:
    """YAML reads unquoted timestamps as datetimes: back to ISO text (naive means UTC)."""
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()
    return v


def parse_when(text: str | float, origin: float) -> float:
    """An ISO instant, or an offset from ``origin``."""
    if isinstance(text, str) and "T" in text:
        return parse_instant(text)
    return origin + parse_offset(text)


class FaultSpec(Frozen):
    """One fault, as written in a scenario or sent live (documented in README.md)."""

    id: Id | None = Field(None, description="Name; generated when absent")
    kind: FaultKind
    target: Id = Field(description="zone, customer, feeder, transformer, pump or device id")
    at: str | float = Field(0, description="Offset (36h, 90s) from scenario start or now, or ISO")
    duration: str | float | None = Field(None, description="Offset; none: until removed")
    rate_lps: float | None = Field(None, gt=0, description="zone_leak, burst: extra inlet flow")
    drop_bar: float | None = Field(None, ge=0, description="burst: pressure drop")
    rate_lph: float | None = Field(None, gt=0, description="customer_leak: flow behind the meter")
    factor: float | None = Field(None, gt=0, description="over_consumption: demand multiplier")
    point: str | None = Field(None, description="sensor_*: point name")
    magnitude: float | None = Field(None, description="sensor_spike: added to the value")
    rate_per_h: float | None = Field(None, description="sensor_drift: added per hour")
    code: int | None = Field(None, ge=1, le=255, description="modbus_exception: exception code")
    delay_s: float | None = Field(None, ge=0, le=60, description="slow_device: wall seconds")
    fault_code: int | None = Field(None, ge=1, le=65535, description="pump_trip: code shown")
    last_gasp_window_s: float | None = Field(
        None, ge=0, description="outages: seconds meters still answer with last_gasp set"
    )

    @field_validator("at", "duration", mode="before")
    @classmethod
    def _iso(cls, v: object) -> object:
        return iso_text(v)

    @field_validator("at", "duration")
    @classmethod
    def _offset(cls, v: str | float | None) -> str | float | None:
        if v is None or (isinstance(v, str) and "T" in v):
            if isinstance(v, str):
                parse_instant(v)
            return v
        parse_offset(v)
        return v

    @model_validator(mode="after")
    def _params(self) -> FaultSpec:
        if self.kind in SENSOR_KINDS and not self.point:
            raise ValueError(f"{self.kind} needs point")
        return self


def check_target(spec: FaultSpec, loaded: LoadedField) -> None:
    f = loaded.field
    what = TARGET_OF.get(spec.kind, "device")
    known: set[str]
    if what == "zone":
        known = {z.id for z in f.water.zones}
    elif what == "customer":
        known = {c.id for c in f.customers}
    elif what == "feeder":
        known = set(f.feeders)
    elif what == "transformer":
        known = set(f.transformers)
    elif what == "pump":
        known = {p.id for p in f.water.pumps}
    else:
        known = set(f.devices)
    if spec.target not in known:
        raise FaultError(f"{spec.kind}: no {what} {spec.target!r} in field {f.id}")
    if spec.kind in SENSOR_KINDS or spec.kind is FaultKind.MODBUS_EXCEPTION:
        prof = loaded.profile_of(spec.target)
        if spec.point and spec.point not in prof.by_name:
            raise FaultError(f"{spec.kind}: device {spec.target} has no point {spec.point!r}")
        if spec.kind is FaultKind.MODBUS_EXCEPTION and not isinstance(prof, ModbusProfile):
            raise FaultError(f"modbus_exception: {spec.target} is not a Modbus device")
