"""Generic rules built from the field's ``rules:`` section: limits, rate of change, discrete
states, stale data and bad quality.

Each rule instance watches one device (profile selectors expand to one rule per device), so
its state is a small immutable tuple and ``step``/``tick`` are pure. Rules emit a condition
on every change of their output and once on their first evaluation (so that an engine
restarted with remembered alarms reconciles them with the present).

Delays: a condition that must hold ``on_delay_s`` before it activates activates at exactly
``start + on_delay`` (event time), whether the deadline is noticed by a later sample of the
device or by a tick of event time (``tick``). The same holds for ``off_delay_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rulecfg import DiscreteRule, LimitRule, Priority, RateRule
from aquavolt.rules.api import Condition, Sample
from aquavolt.wire import Quality

STATUS_POINT = "_status"  # the device status pseudo-point (rules.core)

# A debounced two-state output: (active: bool | None (unknown), pending_since_ms | None)
Deb = tuple[bool | None, int | None]
UNKNOWN: Deb = (None, None)


@dataclass(frozen=True, slots=True)
class Limit:
    """One side of a limit: ``above`` for high, else low."""

    condition: str
    above: bool
    limit: float
    deadband: float
    on_ms: int
    off_ms: int
    priority: Priority
    message: str


def _debounce(lim: Limit, st: Deb, raw_on: bool, raw_off: bool, ts: int) -> tuple[Deb, int | None, bool]:
    """Advance one debounced output. Returns (state, change_ts or None, new_active)."""
    active, pending = st
    if not active:
        if raw_on:
            start = ts if pending is None else pending
            if ts - start >= lim.on_ms:
                return (True, None), start + lim.on_ms, True
            return (active, start), None, False
        if active is None:
            return (False, None), ts, False
        return ((False, None) if pending is not None else st), None, False
    if raw_off:
        start = ts if pending is None else pending
        if ts - start >= lim.off_ms:
            return (False, None), start + lim.off_ms, False
        return (True, start), None, True
    return ((True, None) if pending is not None else st), None, True


def _deb_tick(st: Deb, on_ms: int, off_ms: int, now: int) -> tuple[Deb, int | None]:
    active, pending = st
    if pending is None:
        return st, None
    delay = off_ms if active else on_ms
    if now - pending >= delay:
        return (not active, None), pending + delay
    return st, None


def _numeric(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


class LimitBinding:
    """High and/or low limits of one point of one device, with deadband, delays and arming.

    State: (high Deb, low Deb, arm) with arm = (running: bool | None, since_ms, armed: bool).
    """

    def __init__(self, device: str, cfg: LimitRule) -> None:
        self.name = f"limit:{device}.{cfg.point}"
        self.device = device
        self.point = cfg.point
        self.armed_by = cfg.armed_by
        self.arm_ms = int(cfg.arm_delay_s * 1000)
        on, off = int(cfg.on_delay_s * 1000), int(cfg.off_delay_s * 1000)
        self.high = None if cfg.high is None else Limit(
            f"{cfg.point}_high", True, cfg.high, cfg.deadband, on, off, cfg.priority,
            f"{cfg.point} above {cfg.high:g}")
        self.low = None if cfg.low is None else Limit(
            f"{cfg.point}_low", False, cfg.low, cfg.deadband, on, off, cfg.priority,
            f"{cfg.point} below {cfg.low:g}")
        self.limits = [x for x in (self.high, self.low) if x is not None]

    def wants(self, device: str, point: str) -> bool:
        return device == self.device and (point in (self.point, self.armed_by))

    def init(self) -> tuple[Deb, Deb, tuple[bool | None, int, bool]]:
        return UNKNOWN, UNKNOWN, (None, 0, self.armed_by is None)

    def _cond(self, lim: Limit, active: bool, ts: int, value: object, why: str = "") -> Condition:
        return Condition(self.device, lim.condition, active, ts, lim.priority,
                         lim.message if active else "", value, suppressed_by=why)

    def step(self, state: Any, s: Sample) -> tuple[Any, list[Condition]]:
        hi, lo, arm = state
        out: list[Condition] = []
        if self.armed_by is not None and s.point == self.armed_by:
            if s.quality is not Quality.GOOD:
                return state, out
            running = bool(s.value)
            if running and arm[0] is not True:
                return (hi, lo, (True, s.ts_ms, False)), out
            if not running and arm[0] is not False:
                why = f"{self.armed_by} is false"
                out = [self._cond(lim, False, s.ts_ms, None, why) for lim in self.limits]
                return (UNKNOWN, UNKNOWN, (False, s.ts_ms, False)), out
            return state, out
        if s.point != self.point or s.quality is not Quality.GOOD:
            return state, out
        v = _numeric(s.value)
        if v is None:
            return state, out
        if not arm[2]:
            if arm[0] is not True or s.ts_ms - arm[1] < self.arm_ms:
                return state, out
            arm = (True, arm[1], True)
            out = [self._cond(lim, False, arm[1] + self.arm_ms, None) for lim in self.limits]
        if self.high is not None:
            h = self.high
            hi, ts, act = _debounce(h, hi, v > h.limit, v < h.limit - h.deadband, s.ts_ms)
            if ts is not None:
                out.append(self._cond(h, act, ts, v))
        if self.low is not None:
            lw = self.low
            lo, ts, act = _debounce(lw, lo, v < lw.limit, v > lw.limit + lw.deadband, s.ts_ms)
            if ts is not None:
                out.append(self._cond(lw, act, ts, v))
        return (hi, lo, arm), out

    def tick(self, state: Any, now_ms: int) -> tuple[Any, list[Condition]]:
        hi, lo, arm = state
        if hi[1] is None and lo[1] is None:
            return state, []
        out: list[Condition] = []
        if self.high is not None:
            hi, ts = _deb_tick(hi, self.high.on_ms, self.high.off_ms, now_ms)
            if ts is not None:
                out.append(self._cond(self.high, bool(hi[0]), ts, None))
        if self.low is not None:
            lo, ts = _deb_tick(lo, self.low.on_ms, self.low.off_ms, now_ms)
            if ts is not None:
                out.append(self._cond(self.low, bool(lo[0]), ts, None))
        return (hi, lo, arm), out


class RateBinding:
    """Rate of change of one point above ``max_rate_per_s``. State: (last_ts, last_v, active).

    Edges report a point with a deadband only when it moves (plus a heartbeat), so a spike
    often arrives minutes after the previous report. The value was then still within the
    deadband of the last report at the poll before the spike (else that poll would have been
    reported), so the rate is at least (|change| - deadband) / poll interval, which is what
    is judged when the gap exceeds 1.5 poll intervals. A ``comm_fail``/``offline`` status
    forgets the last value: the first reading after a loss of communication is no spike.
    """

    def __init__(self, device: str, cfg: RateRule, interval_s: float | None = None,
                 deadband_abs: float | None = None, deadband_pct: float | None = None) -> None:
        self.name = f"rate:{device}.{cfg.point}"
        self.device, self.point = device, cfg.point
        self.max_rate = cfg.max_rate_per_s
        self.priority = cfg.priority
        self.condition = f"{cfg.point}_rate"
        self.interval_ms = None if interval_s is None else int(interval_s * 1000)
        self.db_abs, self.db_pct = deadband_abs, deadband_pct
        self.on_change = interval_s is not None and (deadband_abs is not None or deadband_pct is not None)

    def wants(self, device: str, point: str) -> bool:
        return device == self.device and point in (self.point, STATUS_POINT)

    def init(self) -> tuple[int | None, float, bool | None]:
        return None, 0.0, None

    def _rate(self, dv: float, dt: int, last_v: float) -> float:
        rate = dv * 1000.0 / dt
        if self.on_change and self.interval_ms and dt > 1.5 * self.interval_ms:
            db = self.db_abs if self.db_abs is not None else abs(last_v) * (self.db_pct or 0.0) / 100
            rate = max(rate, (dv - db) * 1000.0 / self.interval_ms)
        return rate

    def step(self, state: Any, s: Sample) -> tuple[Any, list[Condition]]:
        if s.point == STATUS_POINT:
            return ((None, 0.0, state[2]) if s.value != "online" else state), []
        v = _numeric(s.value) if s.quality is Quality.GOOD else None
        if v is None:
            return state, []
        last_ts, last_v, active = state
        if last_ts is None or s.ts_ms <= last_ts:
            return (s.ts_ms if last_ts is None else last_ts, v if last_ts is None else last_v, active), []
        rate = self._rate(abs(v - last_v), s.ts_ms - last_ts, last_v)
        now = rate > self.max_rate
        if now is active:
            return (s.ts_ms, v, active), []
        msg = f"{self.point} changes {rate:.4g}/s (max {self.max_rate:g}/s)" if now else ""
        return (s.ts_ms, v, now), [Condition(self.device, self.condition, now, s.ts_ms, self.priority,
                                             msg, v, details={"rate_per_s": rate})]

    def tick(self, state: Any, now_ms: int) -> tuple[Any, list[Condition]]:
        return state, []


class DiscreteBinding:
    """A discrete point in its alarm state (pump fault, breaker open, door open)."""

    def __init__(self, device: str, cfg: DiscreteRule) -> None:
        self.name = f"discrete:{device}.{cfg.point}"
        self.device, self.point = device, cfg.point
        self.alarm_value = cfg.alarm_value
        self.lim = Limit(cfg.point, True, 0.0, 0.0, int(cfg.on_delay_s * 1000), 0, cfg.priority,
                         cfg.message or f"{cfg.point} = {cfg.alarm_value}")

    def wants(self, device: str, point: str) -> bool:
        return device == self.device and point == self.point

    def init(self) -> Deb:
        return UNKNOWN

    def _matches(self, v: object) -> bool:
        if isinstance(self.alarm_value, bool):
            return bool(v) is self.alarm_value
        return v == self.alarm_value

    def step(self, state: Any, s: Sample) -> tuple[Any, list[Condition]]:
        if s.quality is not Quality.GOOD or s.value is None:
            return state, []
        hit = self._matches(s.value)
        st, ts, act = _debounce(self.lim, state, hit, not hit, s.ts_ms)
        if ts is None:
            return st, []
        return st, [Condition(self.device, self.point, act, ts, self.lim.priority,
                              self.lim.message if act else "", s.value)]

    def tick(self, state: Any, now_ms: int) -> tuple[Any, list[Condition]]:
        st, ts = _deb_tick(state, self.lim.on_ms, 0, now_ms)
        if ts is None:
            return state, []
        return st, [Condition(self.device, self.point, bool(st[0]), ts, self.lim.priority,
                              self.lim.message if st[0] else "")]


class DeviceWatch:
    """Stale (no data for the edge's heartbeat plus ``intervals`` poll intervals) and bad
    quality, for one device. Report by exception sends an unchanged value only once per
    heartbeat, so silence up to the heartbeat is normal.

    State: (last_ts | None, first_tick_ms | None, stale: bool, bad_points: frozenset, bad: bool,
    silent: bool). ``silent``: the device's status says ``comm_fail`` or ``offline`` (its
    ``_status`` pseudo-point); no stale alarm then, the loss of communication is the one
    alarm, even while its own ``comm_fail`` is still held off (``rules.comm``).

    ``gateway_clock``: the core ticks this rule with the event time of the device's gateway,
    not the core's tick (a gateway whose messages lag the others' is not silent). A device
    never heard from is judged ``grace_ms`` after the first tick, not one stale limit after.
    """

    def __init__(self, device: str, interval_s: float, intervals: float, priority: Priority,
                 gateway: str | None = None, grace_s: float = 0.0, heartbeat_s: float = 0.0) -> None:
        self.name = f"watch:{device}"
        self.device = device
        self.limit_ms = int((heartbeat_s + interval_s * intervals) * 1000)
        self.grace_ms = max(self.limit_ms, int(grace_s * 1000))
        self.priority = priority
        self.gateway_clock = gateway

    def wants(self, device: str, point: str) -> bool:
        return device == self.device

    def init(self) -> tuple[int | None, int | None, bool, frozenset[str], bool | None, bool]:
        return None, None, False, frozenset(), None, False

    def step(self, state: Any, s: Sample) -> tuple[Any, list[Condition]]:
        last, first, stale, bad_pts, bad, _silent = state
        if s.point == STATUS_POINT:
            online = s.value == "online"
            if online and _silent and (last is None or s.ts_ms > last):
                last = s.ts_ms  # it answers again now: its silence is measured from here
            return (last, first, stale, bad_pts, bad, not online), []
        ts = s.ts_ms if last is None or s.ts_ms > last else last
        is_bad = s.quality is Quality.BAD
        # a bad reading is no sign that the device answers: the marks an edge sends on a loss of
        # communication may reach the engine after the comm_fail status (the status is published
        # at once, the data through the store-and-forward queue)
        silent = _silent and is_bad
        if silent:  # a loss of communication's marks: its comm_fail is the one alarm (first out)
            return (last, first, stale, bad_pts, bad, True), []
        if not stale and bad is not None and not is_bad and s.point not in bad_pts:
            return (ts, first, False, bad_pts, bad, False), []
        out: list[Condition] = []
        if stale:
            out.append(Condition(self.device, "stale", False, s.ts_ms, self.priority))
        if is_bad:
            bad_pts = bad_pts | {s.point}
        elif s.point in bad_pts:
            bad_pts = bad_pts - {s.point}
        now_bad = bool(bad_pts)
        if now_bad is not bad:
            msg = "bad quality: " + ", ".join(sorted(bad_pts)) if now_bad else ""
            out.append(Condition(self.device, "bad_quality", now_bad, s.ts_ms, Priority.LOW, msg))
        return (ts, first, False, bad_pts, now_bad, silent), out

    def tick(self, state: Any, now_ms: int) -> tuple[Any, list[Condition]]:
        last, first, stale, bad_pts, bad, silent = state
        if stale or silent or bad:  # one alarm per loss of data: comm_fail, else bad_quality
            return state, []
        if first is None:
            first = now_ms
        ref, limit = (first, self.grace_ms) if last is None else (last, self.limit_ms)
        if now_ms - ref > limit:
            msg = f"no data for {limit / 1000:g} s"
            return (last, first, True, bad_pts, bad, silent), [
                Condition(self.device, "stale", True, ref + limit, self.priority, msg)]
        return (last, first, stale, bad_pts, bad, silent), []


def poll_interval_s(loaded: LoadedField, device: str) -> float:
    """The device's fastest poll interval over the groups of its profile's points."""
    gw, dev = loaded.field.devices[device]
    intervals = {**gw.poll_intervals_s, **dev.poll_intervals_s}
    default = intervals.get("default", 10.0)
    groups = {p.group for p in loaded.profile_of(device).points}
    return min(intervals.get(g, default) for g in groups)


def _rate_binding(loaded: LoadedField, device: str, cfg: RateRule) -> RateBinding:
    """A rate rule knowing the point's poll interval and report deadband (on-change points)."""
    gw, dev = loaded.field.devices[device]
    intervals = {**gw.poll_intervals_s, **dev.poll_intervals_s}
    pt = next((p for p in loaded.profile_of(device).points if p.name == cfg.point), None)
    if pt is None:
        return RateBinding(device, cfg)
    interval = intervals.get(pt.group, intervals.get("default", 10.0))
    return RateBinding(device, cfg, interval, pt.deadband_abs, pt.deadband_pct)


def _devices_for(loaded: LoadedField, device: str | None, profile: str | None) -> list[str]:
    if device is not None:
        return [device]
    return [d for d, (_g, dev) in loaded.field.devices.items() if dev.profile == profile]


def build_generic_rules(loaded: LoadedField) -> list[Any]:
    """Every generic rule of a field, one instance per device it concerns."""
    cfg = loaded.field.rules
    out: list[Any] = []
    for lim in cfg.limits:
        out += [LimitBinding(d, lim) for d in _devices_for(loaded, lim.device, lim.profile)]
    for rate in cfg.rates:
        out += [_rate_binding(loaded, d, rate) for d in _devices_for(loaded, rate.device, rate.profile)]
    for disc in cfg.discrete:
        out += [DiscreteBinding(d, disc) for d in _devices_for(loaded, disc.device, disc.profile)]
    st = cfg.stale
    for d, (gw, _dev) in loaded.field.devices.items():
        out.append(DeviceWatch(d, poll_interval_s(loaded, d), st.intervals, st.priority, gw.id,
                               st.startup_grace_s, st.heartbeat_s))
    return out
