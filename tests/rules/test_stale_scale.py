"""A stale limit is the edge's heartbeat plus N polls. On a clock running 600 times faster,
a heartbeat 100 ms late (a busy host) is a minute late in simulated time: the limit then
allows half a wall second more, scaled by the acceleration; at 1x it is exactly the same."""

from __future__ import annotations

from pathlib import Path

from aquavolt.config import load_field
from rules.api import Sample
from rules.generic import DeviceWatch, build_generic_rules

FIELD = Path(__file__).resolve().parents[2] / "examples" / "demo-town.yaml"


def _watch(time_scale: float) -> DeviceWatch:
    rules = build_generic_rules(load_field(FIELD), time_scale)
    return next(r for r in rules if isinstance(r, DeviceWatch) and r.device == "pressure-zone-a")


def test_the_stale_limit_allows_transport_lag_only_on_an_accelerated_clock() -> None:
    at_1x, at_600x = _watch(1.0), _watch(600.0)
    assert at_1x.limit_ms == (900 + 3 * 30) * 1000  # heartbeat 900 s + 3 polls of 30 s
    assert at_600x.limit_ms == at_1x.limit_ms + 300_000
    # a heartbeat 60 s (0.1 s of wall time) later than the limit: stale at 1x, not at 600x
    for watch, stale in ((at_1x, True), (at_600x, False)):
        state = watch.init()
        state, _ = watch.step(state, Sample("gw-pumping", "pressure-zone-a", "pressure_bar", 2.1, 0))
        state, conds = watch.tick(state, at_1x.limit_ms + 60_000)
        assert [c.condition for c in conds if c.active] == (["stale"] if stale else [])
