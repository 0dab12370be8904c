"""Loss of communication: one fault, one alarm.

- :class:`CommWatch` (one per device): the device's ``comm_fail`` alarm, from its status
  (the ``_status`` pseudo-point), held off ``on_delay_s`` (default 60 s, a bit above the
  outage debounce of 45 s). A meter that goes silent because its transformer lost supply
  is then already covered by the ``outage`` alarm when its own ``comm_fail`` would start,
  and that alarm is suppressed by topology instead of annunciated; a blip shorter than
  the hold-off raises nothing.
- :class:`GroupComm` (one per bus with at least ``rollup_min_devices`` devices, and one per
  gateway with devices on two or more buses): when ``rollup_fraction`` of the group's
  devices are in ``comm_fail`` together (a Modbus TCP concentrator, a serial line or an
  OPC-UA server is down, or the whole site link), ONE ``comm_fail`` alarm is raised on the
  group: asset ``{gateway}.{bus}`` for a bus, the gateway id for a gateway. The devices'
  own ``comm_fail`` (and ``stale``, ``bad_quality``) are suppressed by it
  (``rules/topology.py``); a bus alarm is itself suppressed by its gateway's.

Timing: the group alarm activates at ``max(earliest failure of its failed devices +
on_delay, the moment the fraction was reached)``, never after its devices' own alarms
(which activate at their failure + on_delay), and is placed before them in the rule list,
so at equal event time it is applied first and the devices' alarms start suppressed. It
clears ``rollup_off_delay_s`` after the share drops below the fraction.
"""

from __future__ import annotations

import math
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rulecfg import CommFailConfig, Priority
from aquavolt.rules.api import Condition, Sample

STATUS_POINT = "_status"

# CommWatch state: (active: bool | None, pending_since_ms | None, reason)
Watch = tuple[bool | None, int | None, str]


class CommWatch:
    """One device's ``comm_fail`` with a hold-off (on-delay); clears as soon as it answers."""

    def __init__(self, device: str, on_delay_s: float, priority: Priority = Priority.MEDIUM) -> None:
        self.name = f"comm:{device}"
        self.device = device
        self.on_ms = int(on_delay_s * 1000)
        self.priority = priority

    def wants(self, device: str, point: str) -> bool:
        return device == self.device and point == STATUS_POINT

    def init(self) -> Watch:
        return None, None, ""

    def _on(self, ts: int, reason: str) -> Condition:
        msg = f"no answer: {reason}" if reason else "no answer"
        return Condition(self.device, "comm_fail", True, ts, self.priority, msg)

    def step(self, state: Watch, s: Sample) -> tuple[Watch, list[Condition]]:
        active, pending, reason = state
        if s.value == "comm_fail":
            why = s.note or reason
            if active:
                return state, []
            start = s.ts_ms if pending is None else pending
            if s.ts_ms - start >= self.on_ms:
                return (True, None, why), [self._on(start + self.on_ms, why)]
            return (active, start, why), []
        if s.value == "online":
            if active is False and pending is None:
                return state, []
            return (False, None, ""), [Condition(self.device, "comm_fail", False, s.ts_ms, self.priority)]
        return state, []  # offline: the gateway is down (its own alarm); no evidence either way

    def tick(self, state: Watch, now_ms: int) -> tuple[Watch, list[Condition]]:
        active, pending, reason = state
        if pending is None or active or now_ms - pending < self.on_ms:
            return state, []
        return (True, None, reason), [self._on(pending + self.on_ms, reason)]


class GroupState:
    """Mutable state of a group: failure start per failed device, raise/clear timing."""

    __slots__ = ("active", "below_ms", "failed", "reached_ms")

    def __init__(self) -> None:
        self.failed: dict[str, int] = {}
        self.active = False
        self.reached_ms: int | None = None  # when the share reached the fraction
        self.below_ms: int | None = None  # when an active group fell below it


class GroupComm:
    """Most devices of one bus or gateway in ``comm_fail`` together: one alarm on the group."""

    def __init__(self, asset: str, kind: str, devices: list[str], cfg: CommFailConfig) -> None:
        self.name = f"comm-group:{asset}"
        self.asset = asset
        self.kind = kind  # "bus" | "gateway"
        self.devices = frozenset(devices)
        self.need = max(2, math.ceil(cfg.rollup_fraction * len(devices) - 1e-9))
        self.on_ms = int(cfg.on_delay_s * 1000)
        self.off_ms = int(cfg.rollup_off_delay_s * 1000)
        self.priority = cfg.priority

    def wants(self, device: str, point: str) -> bool:
        return point == STATUS_POINT and device in self.devices

    def init(self) -> GroupState:
        return GroupState()

    def _cond(self, st: GroupState, active: bool, ts: int) -> Condition:
        n = len(st.failed)
        msg = (f"{n} of {len(self.devices)} devices of {self.kind} {self.asset} do not answer"
               if active else "")
        return Condition(self.asset, "comm_fail", active, ts, self.priority, msg, n,
                         details={"kind": self.kind, "failed": sorted(st.failed)})

    def step(self, st: GroupState, s: Sample) -> tuple[GroupState, list[Condition]]:
        if s.value == "comm_fail":
            st.failed.setdefault(s.device, s.ts_ms)
        else:
            st.failed.pop(s.device, None)
        return st, self._judge(st, s.ts_ms)

    def tick(self, st: GroupState, now_ms: int) -> tuple[GroupState, list[Condition]]:
        if st.reached_ms is None and st.below_ms is None:
            return st, []
        return st, self._judge(st, now_ms)

    def _judge(self, st: GroupState, now: int) -> list[Condition]:
        many = len(st.failed) >= self.need
        if not st.active:
            if not many:
                st.reached_ms = None
                return []
            if st.reached_ms is None:
                st.reached_ms = now
            at = max(min(st.failed.values()) + self.on_ms, st.reached_ms)
            if now < at:
                return []
            st.active, st.reached_ms, st.below_ms = True, None, None
            return [self._cond(st, True, at)]
        if many:
            st.below_ms = None
            return []
        if st.below_ms is None:
            st.below_ms = now
        if now - st.below_ms < self.off_ms:
            return []
        at = st.below_ms + self.off_ms
        st.active, st.below_ms = False, None
        return [self._cond(st, False, at)]


def bus_asset(gateway: str, bus: str) -> str:
    return f"{gateway}.{bus}"


def groups(loaded: LoadedField) -> list[tuple[str, str, str, list[str]]]:
    """(asset, kind, gateway, devices) of every group that is rolled up, gateways first."""
    cfg = loaded.field.rules.comm_fail
    gws: list[tuple[str, str, str, list[str]]] = []
    buses: list[tuple[str, str, str, list[str]]] = []
    for gw in loaded.field.gateways:
        if gw.kind == "sparkplug":  # no buses: the edge node's devices roll up to the node
            if len(gw.devices) >= cfg.rollup_min_devices:
                gws.append((gw.id, "gateway", gw.id, [d.id for d in gw.devices]))
            continue
        by_bus: dict[str, list[str]] = {}
        for d in gw.devices:
            if d.bus is not None:
                by_bus.setdefault(d.bus, []).append(d.id)
        if len(by_bus) >= 2 and len(gw.devices) >= cfg.rollup_min_devices:
            gws.append((gw.id, "gateway", gw.id, [d.id for d in gw.devices]))
        for bus, devs in by_bus.items():
            if len(devs) >= cfg.rollup_min_devices:
                buses.append((bus_asset(gw.id, bus), "bus", gw.id, devs))
    return gws + buses


def build_comm_rules(loaded: LoadedField) -> list[Any]:
    """Group rules (gateways, then buses), then one CommWatch per device: that order makes
    a group alarm apply before the device alarms it suppresses at the same event time."""
    cfg = loaded.field.rules.comm_fail
    out: list[Any] = [GroupComm(asset, kind, devs, cfg) for asset, kind, _gw, devs in groups(loaded)]
    out += [CommWatch(d, cfg.on_delay_s, cfg.priority) for d in loaded.field.devices]
    return out
