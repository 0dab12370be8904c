"""Scenario files: a field, a start, a duration, a seed, faults, and the alarms the system
must (``expect``), may (``allow``) and must not (``forbid``) raise, with alarm-rate
``limits``. Format in simulators/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from aquavolt.clock import parse_instant, parse_offset
from aquavolt.config import LoadedField, load_field, load_model
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.faults import FaultError, FaultSpec, check_target, iso_text, parse_when
from aquavolt.profiles import Frozen


class Expect(Frozen):
    """An alarm that must be raised: ``condition`` on ``asset``, by a deadline."""

    @field_validator("by", mode="before")
    @classmethod
    def _iso(cls, v: object) -> object:
        return iso_text(v)

    condition: str = Field(description="Condition name (rules/api.py CONDITIONS), e.g. outage")
    asset: str = Field(description="Asset id: device, zone, customer, transformer, feeder")
    after: str | None = Field(None, description="Fault id the delay counts from (default: first)")
    within: str | float | None = Field(None, description="Max delay after that fault (offset)")
    by: str | float | None = Field(None, description="Latest instant: offset from start or ISO")

    @model_validator(mode="after")
    def _deadline(self) -> Expect:
        if (self.within is None) == (self.by is None):
            raise ValueError("give exactly one of within (after a fault) or by (latest time)")
        for v in (self.within, self.by):
            if v is not None and not (isinstance(v, str) and "T" in v):
                parse_offset(v)
        return self


DETECTOR_CONDITIONS = frozenset({
    "stale", "bad_quality", "comm_fail", "gateway_offline", "night_flow_rise", "burst",
    "continuous_flow", "outage", "voltage_band", "voltage_week", "imbalance", "overload",
    "over_consumption",
})
"""Condition names of the rules engine's detectors (rules/api.py CONDITIONS); the generic
rules add ``{point}``, ``{point}_high``, ``{point}_low`` and ``{point}_rate``."""


def known_condition(name: str, points: set[str]) -> bool:
    if name in DETECTOR_CONDITIONS or name in points:
        return True
    base, _, suffix = name.rpartition("_")
    return suffix in ("high", "low", "rate") and base in points


class Forbid(Frozen):
    """A condition that must not be raised (on ``asset``, or on any asset when absent)."""

    condition: str
    asset: str | None = None


class Allow(Frozen):
    """A legitimate consequence: ``condition`` (on ``asset``, any asset when absent) may be
    annunciated without being a false alarm; with ``after`` or ``within``, only from that
    fault's start (the first fault by default) to ``within`` later (the run's end when absent)."""

    condition: str
    asset: str | None = None
    after: str | None = Field(None, description="Fault id the window opens at (default: first)")
    within: str | float | None = Field(None, description="Window length after that fault (offset)")

    @field_validator("within")
    @classmethod
    def _within(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_offset(v)
        return v

    @property
    def timed(self) -> bool:
        return self.after is not None or self.within is not None


class Limits(Frozen):
    """Alarm-rate limits (EEMUA 191 figures, harness/eemua.py); each one absent is not
    checked. Windows are the fixed 10-minute windows from the scenario's start."""

    max_per_10min: int | None = Field(None, ge=0, description="Most alarms in any 10-minute window")
    max_floods: int | None = Field(None, ge=0, description="Most 10-minute windows with more than 10")
    max_chattering: int | None = Field(None, ge=0, description="Most alarms annunciated 3+ times in 60 s")
    max_per_hour: float | None = Field(None, ge=0, description="Most alarms per hour, on average")

    def checked(self) -> list[tuple[str, float]]:
        """The limits set, by name."""
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class Scenario(Frozen):
    field: str = Field(description="Field file, relative to the scenario file")
    description: str = ""
    start: str = Field(description="Simulated start instant, ISO 8601")
    duration: str | float = Field(description="Simulated length: 36h, 7d, seconds")
    acceleration: float = Field(1000.0, gt=0, description="Simulated seconds per wall second")
    seed: int = 1
    history_days: int = Field(0, ge=0, description="Days of history to backfill before the run")
    faults: list[FaultSpec] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    forbid: list[Forbid] = Field(default_factory=list)
    allow: list[Allow] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)

    @field_validator("start", mode="before")
    @classmethod
    def _iso(cls, v: object) -> object:
        return iso_text(v)

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_instant(v)
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        parse_offset(v)
        return v


@dataclass(frozen=True)
class LoadedScenario:
    path: Path
    scenario: Scenario
    field: LoadedField

    @property
    def start(self) -> float:
        return parse_instant(self.scenario.start)

    @property
    def end(self) -> float:
        return self.start + parse_offset(self.scenario.duration)

    def fault_start(self, fault_id: str | None) -> float:
        faults = self.scenario.faults
        for i, f in enumerate(faults):
            if fault_id is None or (f.id or f"{f.kind.value}-{i + 1}") == fault_id:
                return parse_when(f.at, self.start)
        raise KeyError(fault_id)

    def deadline(self, e: Expect) -> float:
        """Latest simulated instant by which the expected alarm must be raised."""
        if e.by is not None:
            return parse_when(e.by, self.start)
        assert e.within is not None
        return self.fault_start(e.after) + parse_offset(e.within)

    def allow_window(self, a: Allow) -> tuple[float, float]:
        """Simulated instants between which ``a`` allows its alarm (the whole run if untimed)."""
        if not a.timed:
            return self.start, self.end
        t0 = self.fault_start(a.after)
        return t0, (t0 + parse_offset(a.within) if a.within is not None else self.end)


def load_scenario(path: Path | str, field_path: Path | str | None = None,
                  loaded: LoadedField | None = None) -> LoadedScenario:
    """Load a scenario and its field (``field_path`` overrides, e.g. a relocated copy;
    ``loaded``: a field already loaded)."""
    path = Path(path)
    sc = load_model(path, Scenario)
    if loaded is None:
        loaded = load_field(field_path if field_path is not None else path.parent / sc.field)
    issues = []
    for i, spec in enumerate(sc.faults):
        try:
            check_target(spec, loaded)
        except FaultError as exc:
            issues.append(ConfigIssue(str(path), f"faults[{i}]", str(exc)))
    ids = [f.id or f"{f.kind.value}-{i + 1}" for i, f in enumerate(sc.faults)]
    for i, e in enumerate(sc.expect):
        if e.after is not None and e.after not in ids:
            issues.append(ConfigIssue(str(path), f"expect[{i}].after", f"no fault {e.after!r}"))
        if e.within is not None and not sc.faults:
            issues.append(ConfigIssue(str(path), f"expect[{i}].within", "no fault to count from"))
    for i, a in enumerate(sc.allow):
        if a.after is not None and a.after not in ids:
            issues.append(ConfigIssue(str(path), f"allow[{i}].after", f"no fault {a.after!r}"))
        if a.within is not None and not sc.faults:
            issues.append(ConfigIssue(str(path), f"allow[{i}].within", "no fault to count from"))
    if issues:
        raise ConfigError(issues)
    return LoadedScenario(path, sc, loaded)
