"""The core's event time: the reorder buffer, the horizon, the tick grid, late messages, flush;
and the engine's idle flush, on a real-time clock only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aquavolt.clock import RealClock, SimClock
from aquavolt.config import LoadedField, load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.core import Core
from aquavolt.rules.generic import DeviceWatch, build_generic_rules
from aquavolt.rules.replay import load_case_field
from aquavolt.rules.service import Engine
from aquavolt.settings import MqttSettings
from aquavolt.wire import Batch, GatewayState, GatewayStatus, Reading

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).resolve().parents[2]
T = 1_780_000_000_000


def _field() -> LoadedField:
    return load_case_field(CASES / "shelve-expiry")  # pump-1 fault is a discrete alarm


def _fault(value: bool, ts: int, device: str = "pump-1") -> Batch:
    return Batch(gateway="gw-1", device=device, seq=0, readings=[Reading(point="fault", value=value, ts_ms=ts)])


def _tank(ts: int) -> Batch:
    return Batch(gateway="gw-1", device="tank-1", seq=0, readings=[Reading(point="level_m", value=3.0, ts_ms=ts)])


def test_messages_wait_for_the_horizon_and_are_released_in_event_time_order() -> None:
    core = Core(_field())
    assert core.batch(_fault(True, T)).events == []  # horizon: T - 10 s
    assert core.pending_messages == 1
    assert core.batch(_fault(False, T + 5_000)).events == []
    out = core.batch(_tank(T + 12_000))  # horizon T + 2 s: the fault, not its clearing
    assert [(e.alarm_id, e.transition, e.ts_ms) for e in out.events] == [("pump-1/fault", "raised", T)]
    assert (core.horizon_ms, core.max_seen_ms) == (T + 2_000, T + 12_000)
    out = core.flush(T + 12_000)
    assert [(e.transition, e.ts_ms) for e in out.events] == [("cleared", T + 5_000)]
    assert core.pending_messages == 0 and core.late_messages == 0


def test_a_late_message_is_processed_at_once_and_counted() -> None:
    core = Core(_field())
    core.batch(_tank(T))
    core.batch(_tank(T + 60_000))  # horizon T + 50 s
    out = core.batch(_fault(True, T + 20_000))  # older than what was released: late
    assert [(e.alarm_id, e.transition, e.ts_ms) for e in out.events] == [("pump-1/fault", "raised", T + 20_000)]
    assert core.late_messages == 1
    core.flush(T + 60_000)
    out = core.batch(_fault(False, T + 55_000))  # at or before a flush: late too, never dropped
    assert [e.transition for e in out.events] == ["cleared"]
    assert core.late_messages == 2


class _Spy:
    """A rule recording the instants it is ticked at."""

    name = "spy"

    def __init__(self) -> None:
        self.ticks: list[int] = []

    def wants(self, device: str, point: str) -> bool:
        return False

    def init(self) -> None:
        return None

    def step(self, state: None, sample: Sample) -> tuple[None, list[Condition]]:
        return None, []

    def tick(self, state: None, now_ms: int) -> tuple[None, list[Condition]]:
        self.ticks.append(now_ms)
        return None, []


def test_ticks_are_on_the_grid_before_the_first_message_after_them() -> None:
    spy = _Spy()
    core = Core(_field(), rules=[spy])  # tick_s 5 s by default
    for ts in (T + 1_200, T + 3_100, T + 7_900, T + 8_000, T + 31_000, T + 47_000):
        core.batch(_tank(ts))
    assert core.horizon_ms == T + 37_000
    # before T+7.9 s: T+5 s; before T+31 s, over a quiet stretch: only the last point, T+30 s
    assert spy.ticks == [T + 5_000, T + 30_000]
    core.flush(T + 47_000)
    assert spy.ticks == [T + 5_000, T + 30_000, T + 45_000]
    assert all(t % 5_000 == 0 for t in spy.ticks)


def test_a_will_is_stamped_with_the_horizon_and_is_not_late() -> None:
    core = Core(_field())
    core.gateway_status(GatewayStatus(gateway="gw-1", state=GatewayState.ONLINE, bd_seq=1, ts_ms=T))
    core.batch(_tank(T + 100_000))
    will = GatewayStatus(gateway="gw-1", state=GatewayState.OFFLINE, bd_seq=1, ts_ms=T)  # its session's start
    out = core.gateway_status(will)
    assert [(e.alarm_id, e.transition, e.ts_ms) for e in out.events] == [
        ("gw-1/gateway_offline", "raised", core.horizon_ms)]
    assert core.horizon_ms == T + 90_000 and core.late_messages == 0
    older = GatewayStatus(gateway="gw-1", state=GatewayState.OFFLINE, bd_seq=0, ts_ms=T)
    assert core.gateway_status(older).events == []  # the will of an older session


def test_the_stale_limit_is_the_heartbeat_plus_the_polls_whatever_the_clock() -> None:
    rules = build_generic_rules(load_field(ROOT / "examples" / "demo-town.yaml"))
    watch = next(r for r in rules if isinstance(r, DeviceWatch) and r.device == "pressure-zone-a")
    assert watch.limit_ms == (900 + 3 * 30) * 1000  # heartbeat 900 s + 3 polls of 30 s
    state, _ = watch.step(watch.init(), Sample("gw-pumping", "pressure-zone-a", "pressure_bar", 2.1, 0))
    assert watch.tick(state, watch.limit_ms)[1] == []
    assert [c.ts_ms for c in watch.tick(state, watch.limit_ms + 1)[1]] == [watch.limit_ms]


def _engine(tmp: Path, clock: Any) -> Engine:
    return Engine(_field(), MqttSettings(), tmp, clock)


def test_an_idle_engine_flushes_on_a_real_clock_only(tmp_path: Path) -> None:
    real = _engine(tmp_path / "real", RealClock())
    sim = _engine(tmp_path / "sim", SimClock(T / 1000, 5000.0))
    try:
        for eng in (real, sim):
            eng.core.batch(_fault(True, T))
            eng.flush_idle()
        # readings from the past on a real clock: no newer message can still be ahead of them
        assert real.core.horizon_ms == T and real.stats.events == 1
        assert real.core.manager.alarms["pump-1/fault"].active
        # a simulated clock waits for event time (health messages) however long it idles
        assert sim.core.pending_messages == 1 and sim.stats.events == 0
    finally:
        real.store.close()
        sim.store.close()
