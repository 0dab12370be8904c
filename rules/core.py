"""The engine's pure core: wire messages in, alarm transitions out. No I/O, no clock.

``Core`` holds every rule's state and the alarm manager. Incoming messages (data batches,
device and gateway status, health) first go through the reorder buffer of
:mod:`rules.eventtime`: they reach the rules in event-time order once the horizon (newest
timestamp seen less ``rules.event_time.allowed_lateness_s``) has passed them, and time-based
rules are ticked on the grid of ``rules.event_time.tick_s``. The output is so a function of the
event-time-ordered stream, not of the order in which messages arrived. A released batch becomes
samples, each dispatched to the rules that want it; the conditions go to the manager. Device
``comm_fail`` and gateway ``offline`` come from status messages. Customer-facing conditions are
also collected for the SMS sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rulecfg import Priority
from aquavolt.rules.alarms import AlarmManager
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.comm import build_comm_rules
from aquavolt.rules.comm import groups as comm_groups
from aquavolt.rules.eventtime import Reorder
from aquavolt.rules.generic import build_generic_rules, poll_interval_s
from aquavolt.rules.topology import build_suppressors
from aquavolt.wire import AlarmEvent, Batch, DeviceStatus, GatewayState, GatewayStatus, Health

STATUS_POINT = "_status"
"""Device status fed to rules as a sample: value "online", "comm_fail" or "offline"."""


@dataclass
class Output:
    events: list[AlarmEvent] = field(default_factory=list)
    customer: list[Condition] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # InfluxDB line protocol from metrics rules

    def extend(self, other: Output) -> None:
        self.events += other.events
        self.customer += other.customer
        self.lines += other.lines


def field_rules(loaded: LoadedField) -> list[Any]:
    """Generic rules plus the detectors ``rules.detectors.build_detectors`` gives."""
    from aquavolt.rules.detectors import build_detectors

    return build_comm_rules(loaded) + build_generic_rules(loaded) + list(build_detectors(loaded))


class Core:
    """``tick_every_ms`` overrides ``rules.event_time.tick_s`` (the engine's ``--tick-ms``)."""

    def __init__(self, loaded: LoadedField, rules: list[Any] | None = None,
                 manager: AlarmManager | None = None, tick_every_ms: int | None = None) -> None:
        self.loaded = loaded
        self.rules = field_rules(loaded) if rules is None else rules
        self.states: list[Any] = [r.init() for r in self.rules]
        release_ms = int(loaded.field.rules.comm_fail.release_after_s * 1000)
        suppressors = build_suppressors(loaded)
        # a dependant is released once it has been polled again after its cause cleared
        interval_ms = {d: int(poll_interval_s(loaded, d) * 1000) for d in loaded.field.devices}
        per_device = {d: interval_ms[d] + release_ms for d in suppressors if d in interval_ms}
        for asset, _kind, _gw, devices in comm_groups(loaded):  # a roll-up: its slowest device
            per_device[asset] = max((interval_ms[d] for d in devices), default=0) + release_ms
        self.manager = manager or AlarmManager(suppressors, release_ms, per_device)
        et = loaded.field.rules.event_time
        tick_ms = int(et.tick_s * 1000) if tick_every_ms is None else tick_every_ms
        self.order = Reorder(int(et.allowed_lateness_s * 1000), max(1, tick_ms), self._tick)
        self._dispatch: dict[tuple[str, str], tuple[int, ...]] = {}
        # rules bound to one device (attribute ``device``) are asked only about that device
        self._of_device: dict[str, list[int]] = {}
        self._unbound: list[int] = []
        for i, r in enumerate(self.rules):
            dev = getattr(r, "device", None)
            if isinstance(dev, str):
                self._of_device.setdefault(dev, []).append(i)
            else:
                self._unbound.append(i)
        self._bd_seq: dict[str, int] = {}
        self._metrics = [i for i, r in enumerate(self.rules) if hasattr(r, "drain_lines")]
        self.readings = 0
        # stale data is judged on each gateway's own event time (rules with ``gateway_clock``)
        self.gw_time: dict[str, int] = {}
        self._clock_of = [getattr(r, "gateway_clock", None) for r in self.rules]
        stale = loaded.field.rules.stale
        self._gw_stale_ms = int(stale.gateway_after_s * 1000)
        self._gw_grace_ms = max(self._gw_stale_ms, int(stale.startup_grace_s * 1000))
        self._gw_stale: dict[str, bool] = {}
        self._first_tick: int | None = None

    # ---------------------------------------------------------------- event time
    @property
    def horizon_ms(self) -> int:
        """Event time released to the rules: the newest timestamp seen less the lateness (0
        before any message)."""
        return max(0, self.order.horizon)

    @property
    def max_seen_ms(self) -> int:
        """The newest timestamp seen in any message (0 before any)."""
        return max(0, self.order.max_seen)

    @property
    def late_messages(self) -> int:
        """Messages that arrived older than what was already released (processed at once)."""
        return self.order.late

    @property
    def pending_messages(self) -> int:
        """Messages in the reorder buffer, waiting for the horizon."""
        return self.order.pending

    def flush(self, until_ms: int) -> Output:
        """Release every buffered message stamped at or before ``until_ms`` and tick the last
        grid point at or before it: the end of a stream, or a real-time engine left idle."""
        out = Output()
        self.order.flush(until_ms, out)
        return out

    def restore(self, horizon_ms: int) -> None:
        """An engine restarted with its stored horizon: messages at or before it are late."""
        self.order.settle(horizon_ms)

    def prime(self, samples: list[Sample]) -> int:
        """Train the learning detectors on history (``rules.history``): no alarm, no event time."""
        from aquavolt.rules.history import prime

        return prime(self.rules, self.states, samples)

    # ---------------------------------------------------------------- released messages
    def _gw_seen(self, gateway: str, ts_ms: int) -> None:
        if ts_ms > self.gw_time.get(gateway, -1):
            self.gw_time[gateway] = ts_ms

    def _targets(self, device: str, point: str) -> tuple[int, ...]:
        key = (device, point)
        t = self._dispatch.get(key)
        if t is None:
            rules = self.rules
            candidates = sorted(self._of_device.get(device, []) + self._unbound)
            t = tuple(i for i in candidates if rules[i].wants(device, point))
            self._dispatch[key] = t
        return t

    def _conditions(self, conds: list[Condition], out: Output) -> None:
        for c in conds:
            out.events += self.manager.apply(c)
            if c.audience == "customer":
                out.customer.append(c)

    def sample(self, s: Sample, out: Output) -> None:
        states, rules = self.states, self.rules
        for i in self._targets(s.device, s.point):
            states[i], conds = rules[i].step(states[i], s)
            if conds:
                self._conditions(conds, out)

    def _batch(self, b: Batch, out: Output) -> None:
        dev, gw, hist = b.device, b.gateway, b.historical
        states, rules, dispatch = self.states, self.rules, self._dispatch
        newest = 0
        for r in b.readings:  # the hot loop: sample() inlined
            ts = r.ts_ms
            point = r.point
            targets = dispatch.get((dev, point))
            if targets is None:
                targets = self._targets(dev, point)
            if targets:
                s = Sample(gw, dev, point, r.value, ts, r.quality, hist)
                for i in targets:
                    states[i], conds = rules[i].step(states[i], s)
                    if conds:
                        self._conditions(conds, out)
            newest = max(newest, ts)
        self.readings += len(b.readings)
        if newest > self.gw_time.get(gw, -1):
            self.gw_time[gw] = newest

    def _health(self, h: Health, out: Output) -> None:
        self._gw_seen(h.gateway, h.ts_ms)

    def _device_status(self, st: DeviceStatus, out: Output) -> None:
        self._gw_seen(st.gateway, st.ts_ms)
        self.sample(Sample(st.gateway, st.device, STATUS_POINT, str(st.state), st.ts_ms, note=st.reason), out)

    def _gateway_status(self, st: GatewayStatus, out: Output, ts: int | None = None) -> None:
        active = st.state is GatewayState.OFFLINE
        msg = f"gateway offline{': ' + st.reason if st.reason else ''}" if active else ""
        ts = st.ts_ms if ts is None else ts
        self._conditions([Condition(st.gateway, "gateway_offline", active, ts, Priority.HIGH, msg)], out)

    # ---------------------------------------------------------------- entry points
    def batch(self, b: Batch) -> Output:
        """A data batch, released at its newest reading's timestamp."""
        out = Output()
        if b.readings:
            self.order.push(max(r.ts_ms for r in b.readings), b.gateway, self._batch, b, out)
        return out

    def health(self, h: Health) -> Output:
        """A gateway's health message: its event time moves on even when no data flows."""
        out = Output()
        self.order.push(h.ts_ms, h.gateway, self._health, h, out)
        return out

    def device_status(self, st: DeviceStatus) -> Output:
        """The state goes to rules as a ``_status`` sample: ``rules.comm`` raises ``comm_fail``
        (per device after a hold-off, or one per bus or gateway), detectors use it as evidence."""
        out = Output()
        self.order.push(st.ts_ms, st.gateway, self._device_status, st, out)
        return out

    def gateway_status(self, st: GatewayStatus) -> Output:
        """The session check is done on arrival: a will whose ``bd_seq`` is older than the
        session already announced is ignored, even if that announcement is still buffered.
        A will carries the time its session began: stamped before the horizon, it is stamped
        with the horizon (the death is no earlier) and applied at once, neither late nor
        moving event time; a later offline status is buffered like any message."""
        out = Output()
        current = self._bd_seq.get(st.gateway, -1)
        if st.state is GatewayState.OFFLINE and st.bd_seq < current:
            return out  # the will of an older session
        if st.state is GatewayState.ONLINE:
            self._bd_seq[st.gateway] = st.bd_seq
        horizon = self.order.horizon
        if st.state is GatewayState.OFFLINE and st.ts_ms < horizon:
            self.order.settle(horizon)
            self._gateway_status(st, out, ts=horizon)
            return out
        self.order.push(st.ts_ms, st.gateway, self._gateway_status, st, out)
        return out

    def condition(self, c: Condition) -> Output:
        """A condition from outside the rules (tests, replays of detector output)."""
        return self.conditions([c])

    def conditions(self, conds: list[Condition]) -> Output:
        """Conditions from outside the streaming rules (the daily over-consumption check)."""
        out = Output()
        self._conditions(conds, out)
        return out

    def drain(self, out: Output) -> Output:
        """Collect the InfluxDB lines the metrics rules produced. Ticks do it; the service
        calls it once after every processing round (lines made by samples)."""
        for i in self._metrics:
            self.states[i], lines = self.rules[i].drain_lines(self.states[i])
            out.lines += lines
        return out

    # ---------------------------------------------------------------- ticks
    def _tick(self, now: int, out: Output) -> None:
        """A grid point of event time: every time-based rule, the gateways' stale judgement and
        the manager's releases, at ``now`` (at or before the horizon)."""
        if self._first_tick is None:
            self._first_tick = now
        states, rules, clocks, gwt = self.states, self.rules, self._clock_of, self.gw_time
        for i, r in enumerate(rules):
            g = clocks[i]
            if g is None:
                t = now
            else:
                t = gwt.get(g, -1)
                if t < 0:
                    continue  # a gateway never heard from: its one alarm is the gateway's stale
            states[i], conds = r.tick(states[i], t)
            if conds:
                self._conditions(conds, out)
        self._gateways_stale(now, out)
        out.events += self.manager.tick(now)  # releases after an upstream fault cleared
        self.drain(out)

    def _gateways_stale(self, now: int, out: Output) -> None:
        """ONE ``stale`` alarm per gateway whose event time lags the tick by
        ``stale.gateway_after_s`` (or never heard of ``startup_grace_s`` after the first
        tick): its devices are not judged meanwhile (their clock is the gateway's)."""
        first = self._first_tick if self._first_tick is not None else now
        conds: list[Condition] = []
        prio = self.loaded.field.rules.stale.priority
        for gw in self.loaded.field.gateways:
            t = self.gw_time.get(gw.id)
            due = first + self._gw_grace_ms if t is None else t + self._gw_stale_ms
            active = now > due
            if active is self._gw_stale.get(gw.id, False):
                continue
            self._gw_stale[gw.id] = active
            ts = due if active else (t if t is not None else now)
            quiet_s = (due - (first if t is None else t)) / 1000
            msg = f"no data, status or health for {quiet_s:g} s" if active else ""
            conds.append(Condition(gw.id, "stale", active, ts, prio, msg))
        if conds:
            self._conditions(conds, out)
