"""No loop in any rule is bounded by data values: a huge jump of event time returns at once.

The burst detector once closed its 300 s slots one by one up to the newest timestamp: a single
message stamped ``2**53`` hung the engine. Every rule of the demo town (generic rules and
detectors) is given readings at t0, then a reading and a tick millennia later; each must answer
in a bounded number of steps, whatever the gap (on the old code the burst detector took seconds
per zone for this jump, the continuous-flow detector about a second per meter).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aquavolt.config import load_field
from aquavolt.rules.api import Sample
from aquavolt.rules.core import Core, field_rules
from aquavolt.rules.detectors.burst import BurstRule
from aquavolt.wire import Batch, BufferHealth, Health, Reading

DEMO = Path(__file__).parents[2] / "examples" / "demo-town.yaml"
T0 = 1_764_000_000_000
CENTURY_MS = 100 * 365 * 86_400_000
MILLENNIA_MS = 70 * CENTURY_MS  # to the year 8900: still a date, 70 times a century's slots


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (not hang) when the block takes longer: a loop walking a century slot by slot
    would otherwise run for hours."""
    def expired(_sig: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: a loop bounded by timestamps")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _samples(loaded, ts: int, k: int = 0) -> list[Sample]:
    out = []
    for dev, (gw, d) in loaded.field.devices.items():
        for name in loaded.profiles[d.profile].by_name:
            out.append(Sample(gw.id, dev, name, 1.0 + k, ts))
    return out


def test_every_rule_answers_a_jump_of_millennia_at_once() -> None:
    loaded = load_field(DEMO)
    rules = field_rules(loaded)
    early = _samples(loaded, T0) + _samples(loaded, T0 + 900_000, 1)
    late = _samples(loaded, T0 + MILLENNIA_MS, 2)
    slow = []
    for r in rules:
        state = r.init()
        mine = [s for s in early if r.wants(s.device, s.point)]
        for s in mine:
            state, _ = r.step(state, s)
        state, _ = r.tick(state, T0 + 900_000)
        t = time.perf_counter()
        with deadline(5.0):
            for s in late:
                if r.wants(s.device, s.point):
                    state, _ = r.step(state, s)
            state, _ = r.tick(state, T0 + MILLENNIA_MS)
        took = time.perf_counter() - t
        # A rule walking the gap would take minutes (the burst detector took about 1 s per zone
        # for a century before, this jump is 70 of them) and meet the 5 s deadline; a bounded
        # one takes milliseconds. 1 s leaves room for a loaded machine and none for a walk.
        if took > 1.0:
            slow.append((getattr(r, "name", type(r).__name__), round(took, 2)))
    assert not slow, slow


def test_the_burst_detector_jumps_over_empty_slots() -> None:
    loaded = load_field(DEMO)
    rule = BurstRule.for_field(loaded)[0]
    state = rule.init()
    for k, dev in enumerate(sorted(rule.inlets)):
        state, _ = rule.step(state, Sample("gw", dev, "flow_lps", 10.0 + k, T0))
    with deadline(5.0):  # walking slot by slot would take hours
        state, _ = rule.tick(state, 2**53)  # the forged timestamp of the finding: must not hang
    assert state.slot_start == 2**53 - 2**53 % rule.slot_ms and state.flow_n == 0


def test_the_engine_core_answers_a_jump_of_millennia_at_once() -> None:
    loaded = load_field(DEMO)
    core = Core(loaded)
    gws = [g.id for g in loaded.field.gateways]
    for dev, (gw, _d) in loaded.field.devices.items():
        core.batch(Batch(gateway=gw.id, device=dev, seq=1, readings=[
            Reading(point=p, value=1.0, ts_ms=T0) for p in loaded.profile_of(dev).by_name]))
    with deadline(10.0):  # the water balances alone took 23 s a century before
        for gw in gws:
            core.health(Health(gateway=gw, ts_ms=T0 + MILLENNIA_MS, uptime_s=1.0,
                               buffer=BufferHealth(depth=0, bytes=0, oldest_age_s=0.0, dropped=0)))
        core.flush(T0 + MILLENNIA_MS)
