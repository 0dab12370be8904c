"""Electricity outages, rolled up the network: one alarm per transformer or feeder.

Evidence, per asset:

- Feeder bay or transformer LV meter voltage: every phase below ``dead_fraction`` (1 %) of
  nominal (IEC 61000-4-30 interruption) for ``debounce_s`` (45 s, the declaration period
  of a meter). A fresh reading above it (younger than ``live_max_age_s``) proves supply.
- Customer meters under a transformer: a last gasp, or a meter that went silent
  (``_status`` comm_fail). When the transformer's own voltage is not known to be live, and
  at least ``rollup_fraction`` of its meters are out with at least one last gasp among them,
  the transformer is out. Silent meters alone are a loss of communication, never an
  outage; silent meters under a live transformer stay a comm_fail (the generic rule's
  alarm per device), and raise nothing here.

Roll-up: a dead feeder (or all transformers of a feeder out) gives one feeder outage;
its transformers raise nothing of their own, and one already raised is closed with
``merged_into``. An outage is ``momentary`` until it lasts ``sustained_after_s`` (IEEE 1366:
5 min), then the condition is re-emitted as ``sustained``; restoration closes it with its
duration and class. Outage conditions are customer-facing (``details.customers`` lists the
customers affected) so that the SMS sink can tell them.

InfluxDB (``drain_lines``): each restoration writes an ``outage`` point (tags feeder,
transformer; fields duration_s, customers, classification, started_ms) at the restoration's
event time, and every local day that ends writes a ``reliability`` point per feeder (SAIDI,
SAIFI, MAIFI: :class:`rules.daily.ReliabilityBook`). An outage closed because it became part
of its feeder's (``merged_into``) is not an interruption of its own and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aquavolt.config import LoadedField
from aquavolt.rulecfg import OutageConfig
from aquavolt.rules import daily
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.common import STATUS_POINT, feeder_phase_nominal_v, flag, number
from aquavolt.schema import OUTAGE, RELIABILITY, line

PHASES = ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")


@dataclass
class _Volts:
    phases: dict[str, float] = field(default_factory=dict)
    dead_since: int | None = None
    live_ts: int | None = None
    last_ts: int | None = None  # newest reading: the asset's state is known up to it


@dataclass
class _Meter:
    gasp_ts: int | None = None
    silent_ts: int | None = None


@dataclass
class _Outage:
    start_ms: int
    evidence: str
    sustained: bool = False


@dataclass
class OutageState:
    volts: dict[str, _Volts] = field(default_factory=dict)
    meters: dict[str, _Meter] = field(default_factory=dict)
    active: dict[str, _Outage] = field(default_factory=dict)  # asset -> outage
    feeder_back: dict[str, int] = field(default_factory=dict)  # feeder -> last return of its voltage
    now: int = 0  # newest timestamp seen: a late reading never moves the judgement back
    hot: dict[str, set[str]] = field(default_factory=dict)
    """Feeder -> the meters and assets under it with evidence (gasp, silence, dead voltage).
    Only feeders with evidence or an active outage are judged: a clean feeder yields nothing."""
    lines: list[str] = field(default_factory=list)  # InfluxDB lines not drained yet
    book: daily.ReliabilityBook | None = None


@dataclass(frozen=True)
class _Asset:
    id: str
    kind: str  # "feeder" | "transformer"
    device: str | None
    nominal_v: float
    customers: tuple[str, ...]
    meters: tuple[str, ...]
    parent: str | None = None
    children: tuple[str, ...] = ()


class OutageRule:
    name = "outage"

    def __init__(self, loaded: LoadedField) -> None:
        f = loaded.field
        self.cfg: OutageConfig = f.rules.outage
        self.skew_ms = int(self.cfg.bay_skew_s * 1000)
        self.hold_ms = int((self.cfg.debounce_s + self.cfg.rollup_hold_s) * 1000) + self.skew_ms
        self.assets: dict[str, _Asset] = {}
        self.meter_tx: dict[str, str] = {}
        for s in f.electricity.substations:
            for fd in s.feeders:
                f_cust: list[str] = []
                for t in fd.transformers:
                    mine = [c for c in f.customers if c.transformer == t.id]
                    meters = tuple(c.electricity_meter for c in mine if c.electricity_meter)
                    for m in meters:
                        self.meter_tx[m] = t.id
                    f_cust += [c.id for c in mine]
                    self.assets[t.id] = _Asset(t.id, "transformer", t.device, f.electricity.nominal_voltage_v,
                                               tuple(c.id for c in mine), meters, parent=fd.id)
                phase_v = feeder_phase_nominal_v(f.electricity.feeder_nominal_voltage_v)
                self.assets[fd.id] = _Asset(
                    fd.id, "feeder", fd.device, phase_v, tuple(f_cust), (),
                    children=tuple(t.id for t in fd.transformers))
        self.voltage_devices = {a.device: a for a in self.assets.values() if a.device}
        self.feeders = [a for a in self.assets.values() if a.kind == "feeder"]
        self.feeder_of = {a.id: (a.parent or a.id) for a in self.assets.values()}
        self.meter_feeder = {m: self.feeder_of[tx] for m, tx in self.meter_tx.items()}
        self.meter_dead_v = {m: self.cfg.dead_fraction * self.assets[tx].nominal_v
                             for m, tx in self.meter_tx.items()}
        self.family = {fd.id: (fd.id, *fd.children) for fd in self.feeders}
        self.tz = f.timezone

    def wants(self, device: str, point: str) -> bool:
        if device in self.voltage_devices:
            return point in PHASES or point == STATUS_POINT
        return device in self.meter_tx and point in ("voltage_v", "last_gasp", "power_restored", STATUS_POINT)

    def init(self) -> OutageState:
        served = {fd.id: len(fd.customers) for fd in self.feeders}
        return OutageState(book=daily.ReliabilityBook(self.tz, served))

    def drain_lines(self, state: OutageState) -> tuple[OutageState, list[str]]:
        out, state.lines = state.lines, []
        return state, out

    def _days(self, state: OutageState, now: int) -> None:
        book = state.book
        if book is None:
            return
        book.start(now)
        if book.next_ms is not None and now >= book.next_ms:
            for feeder, fields, ts in book.due(now):
                state.lines.append(line(RELIABILITY, {"feeder": feeder}, fields, ts))

    # ------------------------------------------------------------------ inputs

    def step(self, state: OutageState, sample: Sample) -> tuple[OutageState, list[Condition]]:
        state.now = now = max(state.now, sample.ts_ms)
        asset = self.voltage_devices.get(sample.device)
        if asset is not None:
            if sample.point in PHASES:
                self._volts(state, asset, sample)
            elif sample.value != "online" and asset.id in state.volts:
                state.volts[asset.id].live_ts = None  # silent: its supply is no longer proven
        else:
            if sample.device not in state.meters and sample.point == "voltage_v":
                v = number(sample)  # the common case: a live reading of a meter without evidence
                if v is None or v >= self.meter_dead_v[sample.device]:
                    return state, (self._evaluate(state, now) if state.hot or state.active else [])
            self._meter(state, sample)
        if not state.hot and not state.active:
            return state, []
        return state, self._evaluate(state, now)

    def tick(self, state: OutageState, now_ms: int) -> tuple[OutageState, list[Condition]]:
        state.now = now_ms = max(state.now, now_ms)
        self._days(state, now_ms)
        if not state.hot and not state.active:
            return state, []
        return state, self._evaluate(state, now_ms)

    def _flag(self, state: OutageState, feeder: str, key: str, on: bool) -> None:
        if on:
            state.hot.setdefault(feeder, set()).add(key)
        else:
            hot = state.hot.get(feeder)
            if hot is not None:
                hot.discard(key)
                if not hot:
                    del state.hot[feeder]

    def _volts(self, state: OutageState, asset: _Asset, sample: Sample) -> None:
        v = number(sample)
        if v is None:
            return
        vs = state.volts.setdefault(asset.id, _Volts())
        if vs.last_ts is not None and sample.ts_ms < vs.last_ts:
            return  # older than what is known of the asset (a late poll): it changes nothing
        vs.last_ts = sample.ts_ms
        vs.phases[sample.point] = v
        if max(vs.phases.values()) < self.cfg.dead_fraction * asset.nominal_v:
            vs.dead_since = vs.dead_since if vs.dead_since is not None else sample.ts_ms
        else:
            if vs.dead_since is not None and asset.kind == "feeder":
                state.feeder_back[asset.id] = sample.ts_ms
            vs.dead_since = None
            vs.live_ts = sample.ts_ms
        self._flag(state, self.feeder_of[asset.id], asset.id, vs.dead_since is not None)

    def _meter(self, state: OutageState, sample: Sample) -> None:
        m = state.meters.setdefault(sample.device, _Meter())
        self._meter_update(m, sample)
        flagged = m.gasp_ts is not None or m.silent_ts is not None
        self._flag(state, self.meter_feeder[sample.device], sample.device, flagged)
        if not flagged:
            del state.meters[sample.device]  # no evidence: the same as never heard of

    def _meter_update(self, m: _Meter, sample: Sample) -> None:
        if sample.point == STATUS_POINT:
            if sample.value == "comm_fail":
                m.silent_ts = m.silent_ts if m.silent_ts is not None else sample.ts_ms
            else:
                m.silent_ts = None  # online: it answers; offline: gateway down, no evidence
            return
        if sample.point == "last_gasp":
            if flag(sample):
                m.gasp_ts = m.gasp_ts if m.gasp_ts is not None else sample.ts_ms
            return
        if sample.point == "power_restored":
            if flag(sample):
                m.gasp_ts = None
            return
        v = number(sample)
        if v is None:
            return
        m.silent_ts = None
        nominal = self.assets[self.meter_tx[sample.device]].nominal_v
        if v >= self.cfg.dead_fraction * nominal:
            m.gasp_ts = None
        elif m.gasp_ts is None:
            m.gasp_ts = sample.ts_ms

    # ------------------------------------------------------------------ judgement

    def _live(self, state: OutageState, asset: _Asset, now: int) -> bool:
        vs = state.volts.get(asset.id)
        return bool(vs and vs.dead_since is None and vs.live_ts is not None
                    and now - vs.live_ts <= self.cfg.live_max_age_s * 1000)

    def _dead(self, state: OutageState, asset: _Asset, now: int, debounced: bool = True,
              since: int = 0) -> int | None:
        """Start of an interruption proven by voltage (debounced), else None. Evidence before
        ``since`` (the return of the feeder's voltage) belonged to the feeder's outage."""
        vs = state.volts.get(asset.id)
        if vs is None or vs.dead_since is None:
            return None
        start = max(vs.dead_since, since)
        if debounced and now - start < self.cfg.debounce_s * 1000:
            return None
        return start

    def _tx_out(self, state: OutageState, tx: _Asset, now: int) -> tuple[int, str] | None:
        since = state.feeder_back.get(tx.parent or "", 0)
        dead = self._dead(state, tx, now, since=since)
        if dead is not None:
            return dead, "voltage"
        if not tx.meters or self._live(state, tx, now):
            return None
        ms = [state.meters.get(m) for m in tx.meters]
        gasps = [m.gasp_ts for m in ms if m is not None and m.gasp_ts is not None and m.gasp_ts >= since]
        silent = [m.silent_ts for m in ms if m is not None and m.gasp_ts is None
                  and m.silent_ts is not None and m.silent_ts >= since]
        if gasps and len(gasps) + len(silent) >= self.cfg.rollup_fraction * len(tx.meters):
            v_dead = self._dead(state, tx, now, debounced=False, since=since)
            return min([*gasps, *([v_dead] if v_dead is not None else [])]), "last_gasp"
        return None

    def _evaluate(self, state: OutageState, now: int) -> list[Condition]:
        out: list[Condition] = []
        active = state.active
        for fd in self.feeders:
            if fd.id not in state.hot and not any(a in active for a in self.family[fd.id]):
                continue  # no evidence and no outage: nothing to judge
            txs = [self.assets[t] for t in fd.children]
            tx_out = {t.id: self._tx_out(state, t, now) for t in txs}
            found: tuple[int, str] | None = None
            dead = self._dead(state, fd, now)
            if dead is not None:
                found = (dead, "voltage")
            elif len(txs) > 1 and all(tx_out.values()):
                found = (min(v[0] for v in tx_out.values() if v), "transformers")
            out += self._update(state, fd, found, now, restored=self._restored(state, fd, found, now))
            feeder_down = found is not None or self._dead(state, fd, now, debounced=False) is not None
            for t in txs:
                if feeder_down:
                    if t.id in state.active:
                        out.append(self._close(state, t, now, merged_into=fd.id))
                    continue
                res = tx_out[t.id]
                held = res is not None and t.id not in state.active and self._feeder_unknown(
                    state, fd, res[0], now)
                if held:
                    continue  # held: the feeder's reading of that instant may still be on its way
                out += self._update(state, t, res, now, restored=self._restored(state, t, res, now))
        return out

    def _feeder_unknown(self, state: OutageState, fd: _Asset, start: int, now: int) -> bool:
        """True while a transformer outage starting at ``start`` must wait for its feeder: the
        bay is monitored, has no reading ``skew_ms`` or more after ``start`` yet (an earlier
        one may still show the state before the loss), and the hold (``rollup_hold_s`` past
        the debounce, plus the skew) has not run out. A bay never heard from is not waited for."""
        vs = state.volts.get(fd.id)
        if vs is None or vs.last_ts is None or vs.last_ts >= start + self.skew_ms:
            return False
        return now < start + self.hold_ms

    def _restored(self, state: OutageState, asset: _Asset, found: tuple[int, str] | None, now: int) -> bool:
        o = state.active.get(asset.id)
        if o is None or found is not None:
            return False
        if o.evidence == "voltage":
            return self._dead(state, asset, now, debounced=False) is None
        return True

    def _update(self, state: OutageState, asset: _Asset, found: tuple[int, str] | None, now: int,
                restored: bool) -> list[Condition]:
        o = state.active.get(asset.id)
        if o is None:
            if found is None:
                return []
            o = state.active[asset.id] = _Outage(found[0], found[1])
            o.sustained = now - o.start_ms >= self.cfg.sustained_after_s * 1000
            return [self._cond(asset, o, now, True)]
        if restored:
            return [self._close(state, asset, now)]
        if not o.sustained and now - o.start_ms >= self.cfg.sustained_after_s * 1000:
            o.sustained = True
            return [self._cond(asset, o, o.start_ms + int(self.cfg.sustained_after_s * 1000), True)]
        return []

    def _close(self, state: OutageState, asset: _Asset, now: int,
               merged_into: str | None = None) -> Condition:
        o = state.active.pop(asset.id)
        extra = {"merged_into": merged_into} if merged_into else {}
        c = self._cond(asset, o, now, False, **extra)
        if not merged_into:
            self._days(state, now)  # a day that ended before this restoration is written first
            feeder = asset.parent or asset.id
            duration_s = float(c.details["duration_s"])
            cls = str(c.details["classification"])
            tags = {"feeder": feeder, "transformer": asset.id if asset.kind == "transformer" else ""}
            state.lines.append(line(OUTAGE, tags, {
                "duration_s": duration_s, "customers": len(asset.customers), "classification": cls,
                "started_ms": o.start_ms, "kind": asset.kind}, now))
            if state.book is not None:
                state.book.add(feeder, now, len(asset.customers), duration_s, cls == "sustained")
        return c

    def _cond(self, asset: _Asset, o: _Outage, ts: int, active: bool, **extra: str) -> Condition:
        n = len(asset.customers)
        duration_s = (ts - o.start_ms) / 1000
        cls = "sustained" if duration_s >= self.cfg.sustained_after_s else "momentary"
        details = {"kind": asset.kind, "start_ms": o.start_ms, "evidence": o.evidence,
                   "customers_affected": n, "customers": list(asset.customers),
                   "classification": cls, "duration_s": duration_s, **extra}
        if asset.parent:
            details["feeder"] = asset.parent
        if active and cls == "momentary":
            msg = (f"Outage on {asset.kind} {asset.id}: {n} customers without supply "
                   f"(interruption, sustained if it lasts {self.cfg.sustained_after_s / 60:g} min; "
                   f"by {o.evidence})")
        elif active:
            msg = (f"Outage on {asset.kind} {asset.id}: {n} customers without supply for "
                   f"{self.cfg.sustained_after_s / 60:g} min, sustained (by {o.evidence})")
        elif extra:
            msg = f"Outage on {asset.kind} {asset.id} now part of the outage of {extra['merged_into']}"
        else:
            details["restored"] = True
            msg = (f"Supply restored on {asset.kind} {asset.id} after {duration_s:.0f} s ({cls} "
                   f"interruption, {n} customers)")
        return Condition(asset.id, "outage", active, ts, self.cfg.priority, msg, n,
                         audience="customer", details=details)
