"""The faults the simulator holds: each spec (aquavolt/faults.py) resolved to simulated
instants and default parameters, in a book. Ending a fault never removes it from the book:
volumes and energy it added stay in the totalisers, which only grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aquavolt.clock import parse_instant
from aquavolt.config import LoadedField
from aquavolt.faults import FaultError, FaultKind, FaultSpec, check_target, parse_when


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
