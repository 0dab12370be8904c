"""Priming the learning detectors from InfluxDB history (a thin adapter; the detectors stay pure).

The burst detector needs ``burst.min_history_days`` of time-of-day profile and the night-flow
detector ``night_flow.baseline_nights`` nights before they judge anything. Learning from live
readings alone leaves an engine blind for days after every start, although the history is in
InfluxDB. At start the engine reads ``rules.prime_history_days`` (21) days of the zone inlets'
and outlets' ``flow_lps`` and of the metered night users' ``flow_lph`` (customers flagged
``night_user``) from ``telemetry`` (good quality only), as ``slot_s`` means per device and point
with ``fill(previous)`` (hourly backfilled history becomes a step-held series), and feeds them
through the same ``step``/``tick`` of the rules that declare ``primed_by_history`` (burst, night
flow). Their conditions and metrics lines are discarded: history trains, it never alarms.

The night users' reads matter: live, the night-flow rule subtracts their measured use from the
zone's minimum night flow; a baseline learnt from the inlets alone would carry that use and its
night-to-night spread (a dairy's 100-400 L/h), which raises the baseline and the noise term of
the threshold and hid a 0.08 L/s leak that the detector finds on live reads alone
(``tests/rules/test_history.py``).
"""

from __future__ import annotations

import re
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.influx import Influx
from aquavolt.rules.api import Sample
from aquavolt.wire import Quality

DAY_MS = 86_400_000


def flow_devices(loaded: LoadedField) -> list[str]:
    """Every zone inlet and outlet meter (their ``flow_lps`` makes the zone inflow)."""
    out: list[str] = []
    for z in loaded.field.water.zones:
        out += [d for d in (*z.inlet_meters, *z.outlet_meters) if d not in out]
    return out


def night_user_meters(loaded: LoadedField) -> list[str]:
    """The water meters of customers flagged ``night_user`` (their ``flow_lph`` is measured
    legitimate night use, subtracted by the night-flow rule)."""
    return sorted({c.water_meter for c in loaded.field.customers if c.night_user and c.water_meter})


def history_query(devices: list[str], start_ms: int, end_ms: int, every_s: int,
                  night_users: list[str] | None = None) -> str:
    def of(ds: list[str]) -> str:
        return "device =~ /^(" + "|".join(re.escape(d) for d in ds) + ")$/"

    which = f"(point = 'flow_lps' AND {of(devices)})"
    if night_users:
        which = f"({which} OR (point = 'flow_lph' AND {of(night_users)}))"
    return (f"SELECT mean(value) AS value FROM telemetry WHERE {which} "
            f"AND quality = 192 AND time >= {start_ms}ms AND time < {end_ms}ms "
            f"GROUP BY time({every_s}s), device, point fill(previous)")


def load_history(influx: Influx, loaded: LoadedField, end_ms: int) -> list[Sample]:
    """The history samples, in time order, ending before ``end_ms`` (the engine's start)."""
    days = loaded.field.rules.prime_history_days
    devices = flow_devices(loaded)
    if days <= 0 or not devices:
        return []
    every_s = loaded.field.rules.burst.slot_s
    rows = influx.rows(history_query(devices, end_ms - days * DAY_MS, end_ms, every_s,
                                     night_user_meters(loaded)))
    gw_of = {d: g.id for d, (g, _dev) in loaded.field.devices.items()}
    out = [Sample(gw_of.get(r["device"], ""), r["device"], r.get("point") or "flow_lps", float(r["value"]),
                  int(r["time"]), Quality.GOOD, True)
           for r in rows if r.get("value") is not None]
    out.sort(key=lambda s: s.ts_ms)
    return out


def prime(rules: list[Any], states: list[Any], samples: list[Sample]) -> int:
    """Feed history through the rules marked ``primed_by_history``; returns how many samples
    each primed rule took in (their outputs are dropped)."""
    idx = [i for i, r in enumerate(rules) if getattr(r, "primed_by_history", False)]
    fed = 0
    last = None
    for s in samples:
        for i in idx:
            r = rules[i]
            if r.wants(s.device, s.point):
                states[i], _ = r.step(states[i], s)
                fed += 1
        if s.ts_ms != last:
            for i in idx:
                states[i], _ = rules[i].tick(states[i], s.ts_ms)
            last = s.ts_ms
    for i in idx:
        drain = getattr(rules[i], "drain_lines", None)
        if drain is not None:
            states[i], _ = drain(states[i])
        reset = getattr(rules[i], "after_priming", None)
        if reset is not None:
            states[i] = reset(states[i])
    return fed
