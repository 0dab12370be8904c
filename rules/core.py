"""The engine's pure core: wire messages in, alarm transitions out. No I/O, no clock.

``Core`` holds every rule's state and the alarm manager. It turns a :class:`Batch` into
samples, dispatches each sample to the rules that want it, ticks time-based rules with the
event-time watermark (the newest timestamp seen in data, status and health messages), and
feeds the conditions to the manager. Device ``comm_fail`` and gateway ``offline`` come from
status messages. Customer-facing conditions are also collected for the SMS sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rulecfg import Priority
from aquavolt.wire import AlarmEvent, Batch, DeviceStatus, GatewayState, GatewayStatus, Health
from rules.alarms import AlarmManager
from rules.api import Condition, Sample
from rules.comm import build_comm_rules
from rules.generic import build_generic_rules
from rules.topology import build_suppressors

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
    from rules.detectors import build_detectors

    return build_comm_rules(loaded) + build_generic_rules(loaded) + list(build_detectors(loaded))


class Core:
    def __init__(self, loaded: LoadedField, rules: list[Any] | None = None,
                 manager: AlarmManager | None = None, tick_every_ms: int = 1000) -> None:
        self.loaded = loaded
        self.rules = field_rules(loaded) if rules is None else rules
        self.states: list[Any] = [r.init() for r in self.rules]
        release_ms = int(loaded.field.rules.comm_fail.release_after_s * 1000)
        self.manager = manager or AlarmManager(build_suppressors(loaded), release_ms)
        self.watermark = 0
        self.tick_every_ms = tick_every_ms
        self._last_tick = -(2**62)
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
        self._gateway_of = {d: g.id for d, (g, _dev) in loaded.field.devices.items()}
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
        self._first_watermark: int | None = None

    def prime(self, samples: list[Sample]) -> int:
        """Train the learning detectors on history (``rules.history``): no alarm, no watermark."""
        from rules.history import prime

        return prime(self.rules, self.states, samples)

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

    def batch(self, b: Batch) -> Output:
        out = Output()
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
        self.advance(newest, out)
        return out

    def drain(self, out: Output) -> Output:
        """Collect the InfluxDB lines the metrics rules produced. ``advance`` does it after its
        ticks; the service calls it once after every processing round (lines made by samples)."""
        for i in self._metrics:
            self.states[i], lines = self.rules[i].drain_lines(self.states[i])
            out.lines += lines
        return out

    def samples(self, samples: list[Sample]) -> Output:
        """Samples in event-time order (replays, benchmarks, golden cases)."""
        out = Output()
        for s in samples:
            self.sample(s, out)
            self.advance(s.ts_ms, out)
        return out

    def advance(self, ts_ms: int, out: Output | None = None) -> Output:
        """Move the watermark to ``ts_ms`` (never back) and tick the rules when due."""
        out = out if out is not None else Output()
        self.watermark = max(self.watermark, ts_ms)
        if self.watermark - self._last_tick < self.tick_every_ms:
            return out
        self._last_tick = now = self.watermark
        if self._first_watermark is None:
            self._first_watermark = now
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
        return out

    def _gateways_stale(self, now: int, out: Output) -> None:
        """ONE ``stale`` alarm per gateway whose event time lags the watermark by
        ``stale.gateway_after_s`` (or never heard of ``startup_grace_s`` after the first
        watermark): its devices are not judged meanwhile (their clock is the gateway's)."""
        first = self._first_watermark if self._first_watermark is not None else now
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

    def health(self, h: Health) -> Output:
        """A gateway's health message: its event time moves on even when no data flows."""
        self._gw_seen(h.gateway, h.ts_ms)
        return self.advance(h.ts_ms)

    def device_status(self, st: DeviceStatus) -> Output:
        """The state goes to rules as a ``_status`` sample: ``rules.comm`` raises ``comm_fail``
        (per device after a hold-off, or one per bus or gateway), detectors use it as evidence."""
        out = Output()
        self._gw_seen(st.gateway, st.ts_ms)
        self.sample(Sample(st.gateway, st.device, STATUS_POINT, str(st.state), st.ts_ms, note=st.reason), out)
        self.advance(st.ts_ms, out)
        return out

    def gateway_status(self, st: GatewayStatus) -> Output:
        out = Output()
        current = self._bd_seq.get(st.gateway, -1)
        if st.state is GatewayState.OFFLINE and st.bd_seq < current:
            return out  # the will of an older session
        if st.state is GatewayState.ONLINE:
            self._bd_seq[st.gateway] = st.bd_seq
        active = st.state is GatewayState.OFFLINE
        msg = f"gateway offline{': ' + st.reason if st.reason else ''}" if active else ""
        # A will carries the time its session began: the death is no earlier than the watermark.
        ts = max(st.ts_ms, self.watermark) if active else st.ts_ms
        self._conditions([Condition(st.gateway, "gateway_offline", active, ts, Priority.HIGH, msg)], out)
        self.advance(st.ts_ms, out)
        return out

    def condition(self, c: Condition) -> Output:
        """A condition from outside the rules (tests, replays of detector output)."""
        return self.conditions([c])

    def conditions(self, conds: list[Condition]) -> Output:
        """Conditions from outside the streaming rules (the daily over-consumption check)."""
        out = Output()
        self._conditions(conds, out)
        return out
