"""The rules' output is a function of the event-time-ordered stream, not of arrival order.

Two hours of the small town (``examples/small-town.yaml``, every rule and detector of it):
three gateways polling their devices (devices of a gateway sampled a little apart, as a poll
cycle does), health every 30 s, and faults that raise and clear alarms: the tank overflows,
pump 1 trips, its motor current goes high, the zone's pressure logger goes silent for half an
hour, the substation door opens, an electricity meter stops answering (``comm_fail``), the
substation gateway sends nothing for seven minutes (its link is down), transformer 1B loses
supply for eight minutes (an outage, judged on ticks, across two gateways). The same
messages delivered in different arrival patterns, each in order per gateway and none later than
the allowed lateness, give the same alarm events (id, transition, event time, message).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from aquavolt.config import LoadedField, load_field
from aquavolt.rules.core import Core, Output
from aquavolt.wire import (
    Batch,
    BufferHealth,
    DeviceState,
    DeviceStatus,
    GatewayState,
    GatewayStatus,
    Health,
    Reading,
)

FIELD = Path(__file__).resolve().parents[2] / "examples" / "small-town.yaml"
T0 = int(datetime(2026, 4, 6, 8, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
END = T0 + 120 * MIN
Message = Batch | DeviceStatus | GatewayStatus | Health
Arrival = list[Message]


@cache
def _field() -> LoadedField:
    return load_field(FIELD)


def _with_event_time(lateness_s: float) -> LoadedField:
    loaded = _field()
    rules = loaded.field.rules
    rules = rules.model_copy(update={"event_time": rules.event_time.model_copy(
        update={"allowed_lateness_s": lateness_s})})
    return LoadedField(loaded.path, loaded.field.model_copy(update={"rules": rules}), loaded.profiles)


def _values(device: str, profile: str, t: int, k: int) -> dict[str, Any]:
    """Point values of one poll at event time ``t`` (the ``k``-th poll of the device)."""
    m = (t - T0) / MIN
    if profile == "av_pump1":
        duty = device == "pump-1"
        tripped = duty and 40 <= m < 50
        running = duty and not tripped
        current = 55.0 if duty and 60 <= m < 63 else (30.0 if running else 0.0)
        return {"running": running, "fault": tripped, "remote_mode": True, "speed_pct": 80.0 if running else 0.0,
                "motor_current_a": current, "discharge_pressure_bar": 4.1 if running else 0.0,
                "flow_lps": 21.0 if running else 0.0, "fault_code": 7 if tripped else 0}
    if profile == "av_level1":
        level = 5.0 + 0.8 * min(1.0, max(0.0, (m - 20) / 4)) - 0.8 * min(1.0, max(0.0, (m - 30) / 4))
        return {"level_m": round(level, 3), "sensor_ok": True}
    if profile == "av_flow1":
        return {"flow_lps": 21.0, "volume_m3": round(1000 + 0.021 * 30 * k, 3), "pressure_bar": 3.2,
                "velocity_mps": 0.6, "status_flags": 0}
    if profile == "av_pressure1":
        return {"pressure_bar": 2.5}
    if profile == "av_rtu_transformer":
        return {"oil_temperature_c": 61.0, "winding_temperature_c": 70.0, "load_kva": 180.0,
                "tap_position": 5, "busbar_voltage_v": 11000.0, "door_open": 70 <= m < 76}
    if profile == "av_rtu_feeder":
        return {"voltage_l1_v": 6350.0, "voltage_l2_v": 6351.0, "voltage_l3_v": 6349.0, "current_l1_a": 40.0,
                "current_l2_a": 41.0, "current_l3_a": 39.0, "breaker_closed": True}
    if profile == "eastron_sdm630":
        v = 0.0 if device == "tx-1b-meter" and 100 <= m < 108 else 231.0
        return {"voltage_l1_v": v, "voltage_l2_v": v, "voltage_l3_v": v, "total_power_w": 9000.0 if v else 0.0,
                "frequency_hz": 50.0}
    if profile == "av_wm1":
        return {"flow_lph": 0.0, "volume_m3": round(100 + 0.01 * k, 3), "alarm_flags": 0}
    return {"voltage_v": 230.0, "current_a": 2.0, "power_w": 450.0, "energy_kwh": round(500 + 0.1 * k, 2),
            "frequency_hz": 50.0, "last_gasp": False, "power_restored": False}


def _silent(device: str, t: int) -> bool:
    m = (t - T0) / MIN
    return (device == "pressure-zone-a" and 30 <= m < 60) or (device == "em-c0005" and 80 <= m < 88)


def _link_down(gateway: str, t: int) -> bool:
    return gateway == "gw-substation" and 90 <= (t - T0) / MIN < 97


@cache
def stream() -> dict[str, list[Message]]:
    """Each gateway's messages in the order it sends them (event-time order)."""
    loaded = _field()
    out: dict[str, list[Message]] = {}
    for g in loaded.field.gateways:
        msgs: list[Message] = [GatewayStatus(gateway=g.id, state=GatewayState.ONLINE, bd_seq=1, ts_ms=T0)]
        poll_ms = int(g.poll_intervals_s["default"] * 1000)
        seq = 0
        for t in range(T0 + 1000, END, 30_000):
            if _link_down(g.id, t):
                continue
            for i, dev in enumerate(g.devices):
                ts = t + i * 150  # devices of one poll cycle are not sampled at one instant
                if (ts - T0 - 1000) % poll_ms >= 30_000 or _silent(dev.id, ts):
                    continue
                k = (ts - T0) // poll_ms
                seq += 1
                readings = [Reading(point=p, value=v, ts_ms=ts) for p, v in _values(dev.id, dev.profile, ts, k).items()]
                msgs.append(Batch(gateway=g.id, device=dev.id, seq=seq, readings=readings))
            if g.id == "gw-meters-a" and t == T0 + 1000 + 80 * MIN:
                msgs.append(DeviceStatus(gateway=g.id, device="em-c0005", state=DeviceState.COMM_FAIL,
                                         ts_ms=t + 500, reason="timeout"))
            if g.id == "gw-meters-a" and t == T0 + 1000 + 88 * MIN:
                msgs.append(DeviceStatus(gateway=g.id, device="em-c0005", state=DeviceState.ONLINE, ts_ms=t + 500))
            msgs.append(Health(gateway=g.id, ts_ms=t + 20_000, uptime_s=(t - T0) / 1000,
                               buffer=BufferHealth(depth=0, bytes=0, oldest_age_s=0, dropped=0)))
        out[g.id] = sorted(msgs, key=_ts)  # stable: one gateway's order of equal timestamps is kept
    return out


def _ts(m: Message) -> int:
    return max(r.ts_ms for r in m.readings) if isinstance(m, Batch) else m.ts_ms


def _by_arrival(arrivals: dict[str, list[int]]) -> Arrival:
    """Merge the gateways' messages by arrival time (per gateway non-decreasing)."""
    s = stream()
    tagged = [(at, n, gw, i) for n, (gw, ats) in enumerate(arrivals.items()) for i, at in enumerate(ats)]
    return [s[gw][i] for _at, _n, gw, i in sorted(tagged)]


def in_event_time_order() -> Arrival:
    return _by_arrival({gw: [_ts(m) for m in msgs] for gw, msgs in stream().items()})


def round_robin(window_ms: int = 5000) -> Arrival:
    """Per window of event time, each gateway's messages as a block, the gateways taken in a
    rotating order: within a window a gateway's later messages come before another's earlier."""
    s = stream()
    gws = sorted(s)
    out: Arrival = []
    for w, start in enumerate(range(T0, END + window_ms, window_ms)):
        for gw in gws[w % 3:] + gws[:w % 3]:
            out += [m for m in s[gw] if start <= _ts(m) < start + window_ms]
    return out


def one_gateway_delayed(gateway: str = "gw-substation", max_delay_ms: int = 9_500) -> Arrival:
    """One gateway's messages arrive up to ``max_delay_ms`` late (random, still in order)."""
    rnd = random.Random(7)
    arrivals: dict[str, list[int]] = {}
    for gw, msgs in stream().items():
        ats: list[int] = []
        for m in msgs:
            at = _ts(m) + (rnd.randint(0, max_delay_ms) if gw == gateway else 0)
            ats.append(max(at, ats[-1] if ats else at))
        arrivals[gw] = ats
    return _by_arrival(arrivals)


def grouped_as_at_5000x(span_ms: int = 9_000) -> Arrival:
    """At 5000x a gateway's messages come in bursts: each gateway's messages of up to
    ``span_ms`` of event time arrive together, when its last one is sent (phases differ)."""
    arrivals: dict[str, list[int]] = {}
    for n, (gw, msgs) in enumerate(stream().items()):
        ats = [_ts(m) for m in msgs]
        groups: list[list[int]] = []
        for i, ts in enumerate(ats):
            if not groups or ts - ats[groups[-1][0]] >= span_ms - n * 2000:
                groups.append([])
            groups[-1].append(i)
        out = list(ats)
        for grp in groups:
            for i in grp:
                out[i] = ats[grp[-1]]
        arrivals[gw] = out
    return _by_arrival(arrivals)


def one_gateway_an_hour_ahead(gateway: str = "gw-pumping") -> Arrival:
    """With a lateness of two hours: one gateway's messages arrive an hour before the others'."""
    return _by_arrival({gw: [_ts(m) - (3_600_000 if gw == gateway else 0) for m in msgs]
                        for gw, msgs in stream().items()})


def run(arrival: Arrival, loaded: LoadedField | None = None) -> tuple[list[tuple[str, str, int, str]], Core]:
    core = Core(loaded or _field())
    out = Output()
    feed: dict[type, Callable[[Any], Output]] = {Batch: core.batch, DeviceStatus: core.device_status,
                                                 GatewayStatus: core.gateway_status, Health: core.health}
    for m in arrival:
        out.extend(feed[type(m)](m))
    out.extend(core.flush(core.max_seen_ms))
    return [(e.alarm_id, e.transition, e.ts_ms, e.message) for e in out.events], core


@cache
def reference() -> list[tuple[str, str, int, str]]:
    events, core = run(in_event_time_order())
    assert core.late_messages == 0
    return events


def test_the_stream_raises_and_clears_the_faults() -> None:
    events = reference()
    changes = {(aid, tr) for aid, tr, _ts, _msg in events}
    for aid in ("tank-north-level/level_m_high", "pump-1/fault", "pump-1/motor_current_a_high",
                "pressure-zone-a/stale", "ss1-transformer/door_open", "em-c0005/comm_fail",
                "gw-substation/stale", "tx-1b/outage"):
        assert (aid, "raised") in changes and (aid, "cleared") in changes, (aid, events)
    stale = [ts for aid, tr, ts, _m in events if aid == "pressure-zone-a/stale" and tr == "raised"]
    last_poll = T0 + 1000 + 59 * 30_000 + 4 * 150  # its last poll before the silence (29.5 min)
    assert stale == [last_poll + (900 + 3 * 30) * 1000]  # heartbeat + 3 polls, exactly


@pytest.mark.parametrize("pattern", [round_robin, one_gateway_delayed, grouped_as_at_5000x])
def test_arrival_patterns_give_the_same_alarm_events(pattern: Callable[[], Arrival]) -> None:
    arrival = pattern()
    assert sorted(map(id, arrival)) == sorted(map(id, in_event_time_order()))  # the same messages
    assert arrival != in_event_time_order()
    events, core = run(arrival)
    assert core.late_messages == 0
    assert events == reference()


def test_a_gateway_hours_ahead_within_a_longer_lateness_gives_the_same_alarm_events() -> None:
    loaded = _with_event_time(7200)
    events, core = run(one_gateway_an_hour_ahead(), loaded)
    assert core.late_messages == 0
    assert events == reference()
    assert run(in_event_time_order(), loaded)[0] == reference()  # the lateness only delays
