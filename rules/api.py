"""The rule interface: every rule, generic or detector, is a pure function on event time.

A rule never reads a clock, never does I/O and knows nothing of the speed of the clock the
readings were stamped with. The engine feeds it samples in event-time order (the reorder
buffer of ``rules.eventtime``: late and out-of-order delivery is handled there, not in rules)
and ticks it on a fixed grid of event time, so that a replay at 1000x raises the same
conditions at the same event times as real time::

    state = rule.init()
    state, out = rule.step(state, sample)      # a reading arrived
    state, out = rule.tick(state, now_ms)      # event time moved on (stale, windows, delays)

Rules emit :class:`Condition` values: "this (asset, condition) is active / not active as
of ts_ms". The alarm manager (lifecycle, ISA-18.2) turns conditions into alarm
transitions; customer-facing conditions also go to the SMS notifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from aquavolt.rulecfg import Priority
from aquavolt.wire import Quality

S = TypeVar("S")


class Sample(NamedTuple):
    """One reading as rules see it (a named tuple: built once per reading, in the hot loop,
    four times faster than a frozen dataclass)."""

    gateway: str
    device: str
    point: str
    value: float | int | bool | str | None
    ts_ms: int
    quality: Quality = Quality.GOOD
    historical: bool = False
    note: str = ""
    """Free text from the source: the reason of a device status (``_status`` samples)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """What a rule says about one (asset, condition) at an event time."""

    asset: str
    condition: str
    active: bool
    ts_ms: int
    priority: Priority = Priority.MEDIUM
    message: str = ""
    value: float | int | bool | str | None = None
    audience: Literal["operator", "customer"] = "operator"
    customer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    suppressed_by: str = ""
    """Suppression by design from plant state (e.g. "running is false"): the alarm is not
    annunciated while set. A later condition without it lifts the suppression."""

    @property
    def alarm_id(self) -> str:
        return f"{self.asset}/{self.condition}"


class Rule(Protocol, Generic[S]):
    """A rule: pure functions of (state, input) -> (state, conditions)."""

    name: str

    def wants(self, device: str, point: str) -> bool:
        """True when samples of this device and point concern the rule."""

    def init(self) -> S:
        """The state before any sample."""

    def step(self, state: S, sample: Sample) -> tuple[S, list[Condition]]:
        """A sample arrived (event-time order within a series)."""

    def tick(self, state: S, now_ms: int) -> tuple[S, list[Condition]]:
        """Event time reached ``now_ms`` (a tick of the grid, at or before the horizon):
        time-based conditions fire here."""


# Condition names every part agrees on (scenarios' expectations, dashboards, SMS use them).
# The asset is the device id for device-level conditions, else the zone, transformer,
# feeder or customer id.
CONDITIONS: dict[str, str] = {
    # generic rules, per point (condition name built from the point name)
    "{point}_high": "limit rule: value above high (asset: device)",
    "{point}_low": "limit rule: value below low (asset: device)",
    "{point}_rate": "rate-of-change rule (asset: device)",
    "{point}": "discrete rule: the point is in its alarm state, e.g. fault (asset: device)",
    "stale": "no data for N poll intervals (asset: device)",
    "bad_quality": "the device reports bad quality (asset: device)",
    "comm_fail": "loss of communication after a hold-off (asset: device; rolled up: "
                 "'{gateway}.{bus}' when most devices of a bus fail, the gateway id for most of a gateway's)",
    "gateway_offline": "the gateway's will or status says offline (asset: gateway)",
    # detectors
    "night_flow_rise": "minimum night flow rose against the zone's baseline (asset: zone)",
    "burst": "step in zone inlet flow with a pressure drop (asset: zone)",
    "continuous_flow": "customer-side leak, 24 h without a quiet hour (asset: customer)",
    "outage": "loss of supply rolled up to the transformer or feeder (asset: transformer/feeder)",
    "voltage_band": "10-minute mean outside the EN 50160 band (asset: transformer/feeder)",
    "voltage_week": "more than 5 % of the last 7 days' 10-minute means outside the EN 50160 band "
                    "(asset: transformer/feeder)",
    "imbalance": "phase voltage imbalance above the limit (asset: transformer/feeder)",
    "overload": "transformer load above nameplate (asset: transformer)",
    "over_consumption": "consumption above the same period last year (asset: customer)",
}


class CustomerSink(Protocol):
    """Where customer-facing conditions (``audience == "customer"``) go besides the alarm
    manager. ``rules.sms`` plugs one in by defining
    ``build_customer_sink(loaded, args) -> CustomerSink`` (``args`` is the ``rules run``
    namespace; the engine adds ``args.publish(topic, payload: bytes, retain: bool)``,
    ``args.topics`` (aquavolt.wire.Topics) and ``args.clock`` before calling it).
    The engine calls ``handle`` on its event loop, in event-time order, never blocking I/O."""

    def handle(self, condition: Condition) -> None:
        """A customer-facing condition changed (active or cleared)."""

