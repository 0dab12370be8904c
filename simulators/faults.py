"""Faults the simulator injects, and the scenario file that schedules them.

A fault is a JSON/YAML object (``FaultSpec``); the same shape serves the scenario file,
``POST /faults`` and the ``{prefix}/sim/fault`` MQTT topic. Its ``at`` is an offset from
the scenario start (scenario) or from now (live), or an ISO instant; ``duration`` is an
offset too (none: until removed). Ending a fault never removes it from the book: volumes
and energy it added stay in the totalisers, which only grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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


@dataclass
class Fault:
    """A scheduled fault: spec resolved to simulated instants and default parameters."""

    id: str
    kind: FaultKind
    target: str
    start: float
    end: float = math.inf
    params: dict[str, Any] = field(default_factory=dict)

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def overlap(self, t0: float, t1: float) -> float:
        """Seconds of [t0, t1) during which the fault is active."""
        return max(0.0, min(t1, self.end) - max(t0, self.start))

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind.value, "target": self.target,
                               "start": self.start, "end": None if math.isinf(self.end) else self.end}
        out.update(self.params)
        if now is not None:
            out["active"] = self.active(now)
        return out


DEFAULTS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.ZONE_LEAK: {"rate_lps": 0.5},
    FaultKind.BURST: {"rate_lps": 8.0, "drop_bar": 0.8},
    FaultKind.CUSTOMER_LEAK: {"rate_lph": 15.0},
    FaultKind.OVER_CONSUMPTION: {"factor": 2.0},
    FaultKind.FEEDER_OUTAGE: {"last_gasp_window_s": 900.0},
    FaultKind.TRANSFORMER_OUTAGE: {"last_gasp_window_s": 900.0},
    FaultKind.PUMP_TRIP: {"fault_code": 17},
    FaultKind.SENSOR_SPIKE: {"magnitude": None},
    FaultKind.SENSOR_DRIFT: {"rate_per_h": None},
    FaultKind.MODBUS_EXCEPTION: {"code": 4},
    FaultKind.SLOW_DEVICE: {"delay_s": 2.0},
}
_PARAMS = ("rate_lps", "drop_bar", "rate_lph", "factor", "point", "magnitude", "rate_per_h",
           "code", "delay_s", "fault_code", "last_gasp_window_s")


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


class FaultBook:
    """Every fault of a run (past, active and scheduled), in insertion order."""

    def __init__(self, loaded: LoadedField) -> None:
        self.loaded = loaded
        self.faults: dict[str, Fault] = {}
        self.version = 0  # bumped on every change (the model caches on it)

    def add(self, spec: FaultSpec, origin: float) -> Fault:
        check_target(spec, self.loaded)
        start = parse_when(spec.at, origin)
        end = parse_when(spec.duration, start) if spec.duration is not None else math.inf
        if isinstance(spec.duration, str) and "T" in spec.duration:
            end = parse_instant(spec.duration)
        params = dict(DEFAULTS.get(spec.kind, {}))
        for name in _PARAMS:
            v = getattr(spec, name)
            if v is not None:
                params[name] = v
        fid = spec.id or f"{spec.kind.value}-{len(self.faults) + 1}"
        if fid in self.faults:
            raise FaultError(f"fault id {fid!r} already exists")
        fault = Fault(fid, spec.kind, spec.target, start, end, params)
        self.faults[fid] = fault
        self.version += 1
        return fault

    def end(self, fid: str, t: float) -> Fault:
        fault = self.faults.get(fid)
        if fault is None:
            raise FaultError(f"no fault {fid!r}")
        if fault.end > t:
            fault.end = max(t, fault.start)
            self.version += 1
        return fault

    def of(self, *kinds: FaultKind) -> list[Fault]:
        return [f for f in self.faults.values() if f.kind in kinds]

    def active(self, t: float, kind: FaultKind, target: str | None = None) -> list[Fault]:
        return [f for f in self.faults.values()
                if f.kind is kind and f.active(t) and (target is None or f.target == target)]
