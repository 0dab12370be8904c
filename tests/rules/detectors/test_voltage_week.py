"""EN 50160's weekly statistic: 95 % of a week's 10-minute mean voltages within +/-10 % of
nominal. A transformer whose evenings run 12 % high for 40 minutes (4 of 144 windows a day,
2.8 %) complies; for 80 minutes (5.6 %) it does not, once a week of windows is known; back
to 40 minutes a day, the share falls under 5 % and the condition clears. The statistic is
judged once a day, on the last 7 days."""

from __future__ import annotations

from aquavolt.config import load_field
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors.quality import PHASES, PowerQualityRule

DAY_MS = 86_400_000
WIN_MS = 600_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS
NOMINAL = 230.0


def _run(high_windows_per_day: list[int]) -> list[Condition]:
    """One reading per phase per 10-minute window of tx-1a's LV meter, day after day; the first
    ``n`` windows from 18:00 each day are 12 % high."""
    rule = PowerQualityRule(load_field("examples/demo-town.yaml"))
    state = rule.init()
    out: list[Condition] = []
    for day, n_high in enumerate(high_windows_per_day):
        for k in range(144):
            ts = T0 + day * DAY_MS + k * WIN_MS + 60_000
            v = NOMINAL * (1.12 if 108 <= k < 108 + n_high else 1.0)
            for p in PHASES:
                state, c = rule.step(state, Sample("gw-substation", "tx-1a-meter", p, v, ts))
                out += c
    return [c for c in out if c.condition == "voltage_week"]


def test_a_week_within_the_statistic_raises_nothing() -> None:
    assert _run([4] * 9) == []


def test_a_week_outside_raises_once_the_week_is_known_and_clears_when_back() -> None:
    conds = _run([8] * 9 + [4] * 9)
    assert [c.active for c in conds] == [True, False], conds
    raised, cleared = conds
    assert raised.asset == "tx-1a" and raised.priority == "medium"
    assert raised.ts_ms >= T0 + int(0.9 * 7 * DAY_MS)  # not before 90 % of a week is known
    assert 5.0 < raised.details["outside_pct"] < 6.0 and raised.details["windows"] >= 907
    assert "EN 50160 weekly" in raised.message and "tx-1a" in raised.message
    assert cleared.details["outside_pct"] <= 5.0
    assert cleared.ts_ms > T0 + 9 * DAY_MS  # after the compliant days have filled the week
