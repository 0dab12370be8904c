"""Over-consumption against the same period last year, per customer (daily).

:func:`compare` is the pure judgement, tested with golden cases. Period = the
``period_days`` complete days before ``today``; each day is compared with the day
``lag_days`` (364, weekdays aligned) earlier, and a day counts only when both it and its
reference are plausible (more than zero, at most ``max_plausible_daily_l``, not estimated)
and neither is a holiday (``holidays``). With less than ``min_history_days`` (13 months)
of history, the reference is the average of the ``fallback_weeks`` weeks before the
period, and the message says so. At least ``min_valid_days`` comparable days are needed.
The verdict's ``alert`` says the ratio of this year's daily average to the reference is at
least ``ratio_threshold``.

:func:`hysteresis` turns the daily verdicts into an alert that does not flap (the message
goes out by SMS): raised after ``raise_after_days`` checks in a row at or above
``ratio_threshold`` (1.3), cleared only after ``clear_after_days`` checks in a row below
``clear_ratio`` (1.2); a ratio between the two keeps the alert as it is and restarts both
counts; an insufficient verdict changes nothing.

:func:`daily_litres` reads the InfluxDB daily rollups (``rp_1d.telemetry_1d``, field
``last`` of the ``volume_m3`` totaliser): the consumption of UTC day D is last(D) -
last(D-1), in litres; a missing neighbour day leaves D unknown. :class:`OverConsumptionCheck`
runs both for every customer, through :func:`hysteresis`, and emits conditions on change only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aquavolt.config import LoadedField
from aquavolt.field import Customer
from aquavolt.influx import Influx, InfluxError
from aquavolt.rulecfg import OverConsumptionConfig, Priority
from aquavolt.rules.api import Condition
from aquavolt.schema import ROLLUPS

Daily = dict[date, float | None]  # litres per day; None: estimated or unknown


@dataclass(frozen=True)
class Verdict:
    customer: str
    alert: bool
    basis: str  # "same_period_last_year" | "recent_weeks" | "insufficient"
    period_start: date
    period_end: date  # inclusive
    this_l_per_day: float | None
    ref_l_per_day: float | None
    ratio: float | None
    days_used: int
    days_excluded: int
    message: str


def _plausible(v: float | None, cfg: OverConsumptionConfig) -> bool:
    return v is not None and 0 < v <= cfg.max_plausible_daily_l


def _span(a: date, b: date) -> str:
    if a.month == b.month:
        return f"{a.day} to {b.day} {b:%B}"
    return f"{a.day} {a:%B} to {b.day} {b:%B}"


def compare(customer: str, daily: Daily, today: date, cfg: OverConsumptionConfig) -> Verdict:
    """Judge one customer's consumption of the period ending yesterday."""
    end = today - timedelta(days=1)
    start = today - timedelta(days=cfg.period_days)
    period = [start + timedelta(days=i) for i in range(cfg.period_days)]
    holidays = {date.fromisoformat(h) for h in cfg.holidays}
    known = [d for d, v in daily.items() if v is not None]
    history_days = (end - min(known)).days + 1 if known else 0

    def ok(d: date) -> bool:
        return d not in holidays and _plausible(daily.get(d), cfg)

    if history_days >= cfg.min_history_days:
        basis = "same_period_last_year"
        pairs = [(d, d - timedelta(days=cfg.lag_days)) for d in period]
        used = [(d, r) for d, r in pairs if ok(d) and ok(r)]
        this = [daily[d] or 0.0 for d, _ in used]
        ref = [daily[r] or 0.0 for _, r in used]
        n_used, n_excl = len(used), len(period) - len(used)
    else:
        basis = "recent_weeks"
        before = [start - timedelta(days=i + 1) for i in range(cfg.fallback_weeks * 7)]
        this = [daily[d] or 0.0 for d in period if ok(d)]
        ref = [daily[d] or 0.0 for d in before if ok(d)]
        n_used = len(this)
        n_excl = len(period) - len(this)
        if len(ref) < cfg.min_valid_days:
            n_used = 0
    if n_used < cfg.min_valid_days or not ref or not this:
        return Verdict(customer, False, "insufficient", start, end, None, None, None, n_used, n_excl,
                       f"Not enough comparable days for {customer} ({n_used} of {cfg.period_days})")
    t = sum(this) / len(this)
    r = sum(ref) / len(ref)
    ratio = t / r
    alert = ratio >= cfg.ratio_threshold
    last_year = basis == "same_period_last_year"
    against = "the same period last year" if last_year else f"your previous {cfg.fallback_weeks} weeks"
    pct = (ratio - 1) * 100
    way = "above" if pct >= 0 else "below"
    msg = (f"Your consumption from {_span(start, end)} is {abs(pct):.0f} % {way} {against} "
           f"({t:.0f} L/day vs {r:.0f} L/day).")
    if not last_year:
        msg += " There is less than 13 months of history to compare with last year."
    if alert:
        msg += " Please check your installation for leaks."
    return Verdict(customer, alert, basis, start, end, round(t, 1), round(r, 1), round(ratio, 3),
                   n_used, n_excl, msg)


@dataclass
class Hysteresis:
    """One customer's over-consumption alert across daily checks."""

    active: bool = False
    over: int = 0  # checks in a row at or above ratio_threshold
    under: int = 0  # checks in a row below clear_ratio


def hysteresis(h: Hysteresis, v: Verdict, cfg: OverConsumptionConfig) -> bool:
    """Update ``h`` with today's verdict; True when the alert was raised or cleared."""
    if v.basis == "insufficient" or v.ratio is None:
        return False
    h.over = h.over + 1 if v.ratio >= cfg.ratio_threshold else 0
    h.under = h.under + 1 if v.ratio < cfg.clear_ratio else 0
    if not h.active and h.over >= cfg.raise_after_days:
        h.active = True
        return True
    if h.active and h.under >= cfg.clear_after_days:
        h.active = False
        return True
    return False


def condition_of(v: Verdict, ts_ms: int) -> Condition:
    return Condition(
        asset=v.customer, condition="over_consumption", active=v.alert, ts_ms=ts_ms, priority=Priority.LOW,
        message=v.message, value=v.ratio, audience="customer", customer=v.customer,
        details={"basis": v.basis, "period_start": v.period_start.isoformat(),
                 "period_end": v.period_end.isoformat(), "this_l_per_day": v.this_l_per_day,
                 "ref_l_per_day": v.ref_l_per_day, "ratio": v.ratio, "days_used": v.days_used,
                 "days_excluded": v.days_excluded})


# ---------------------------------------------------------------- InfluxDB adapter

RP_1D, MEAS_1D = next((rp, m) for rp, _d, g, m in ROLLUPS if g == "1d")


def rollup_written(influx: Influx, day: date, point: str = "volume_m3") -> bool:
    """True once the daily rollup of ``day`` (UTC) holds a ``point`` row."""
    lo = datetime.combine(day, datetime.min.time(), UTC)
    q = (f'SELECT "last" FROM "{RP_1D}"."{MEAS_1D}" WHERE "point" = \'{point}\' '
         f"AND time >= '{lo:%Y-%m-%dT%H:%M:%SZ}' AND time < '{lo + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}' "
         f"LIMIT 1")
    return bool(influx.query(q))


def daily_litres(influx: Influx, devices: list[str], first: date, last: date,
                 point: str = "volume_m3") -> dict[str, Daily]:
    """Daily consumption (litres) of each device from ``first`` to ``last`` (UTC days)."""
    if not devices:
        return {}
    lo = datetime.combine(first - timedelta(days=1), datetime.min.time(), UTC)
    hi = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    regex = "|".join(d.replace(".", r"\.") for d in devices)
    q = (f'SELECT "last" FROM "{RP_1D}"."{MEAS_1D}" WHERE "point" = \'{point}\' '
         f'AND "device" =~ /^({regex})$/ '
         f"AND time >= '{lo:%Y-%m-%dT%H:%M:%SZ}' AND time < '{hi:%Y-%m-%dT%H:%M:%SZ}' GROUP BY \"device\"")
    totals: dict[str, dict[date, float]] = {}
    for row in influx.rows(q):
        if row.get("last") is None:
            continue
        day = datetime.fromtimestamp(row["time"] / 1000, UTC).date()
        totals.setdefault(row["device"], {})[day] = float(row["last"])
    out: dict[str, Daily] = {}
    for dev in devices:
        t = totals.get(dev, {})
        days: Daily = {}
        d = first
        while d <= last:
            a, b = t.get(d - timedelta(days=1)), t.get(d)
            days[d] = (b - a) * 1000.0 if a is not None and b is not None else None
            d += timedelta(days=1)
        out[dev] = days
    return out


ROLLUP_WAIT_S = 1800
"""Event seconds a daily check waits for yesterday's daily rollup at most."""


class RollupNotReady(InfluxError):
    """Yesterday's daily rollup is not in InfluxDB yet: the daily check waits for it."""


class OverConsumptionCheck:
    """Runs :func:`compare` for every customer with a water meter, once per day.

    The engine calls ``check(today, ts_ms)`` once a day after the daily rollup of the day
    before is written (InfluxDB 1.x runs the 1d continuous query just after UTC midnight);
    it returns the conditions that changed since the last call.
    """

    def __init__(self, loaded: LoadedField, influx: Influx) -> None:
        self.cfg = loaded.field.rules.over_consumption
        self.customers: list[Customer] = [c for c in loaded.field.customers if c.water_meter]
        self.influx = influx
        self.alerts: dict[str, Hysteresis] = {}

    def check(self, today: date, ts_ms: int, horizon_ms: int | None = None) -> list[Condition]:
        """``horizon_ms``: the event time the engine has reached. A rollup still missing
        ``ROLLUP_WAIT_S`` of event time after the check fell due (no meter answered that day,
        or rollups made elsewhere) is waited for no longer: the day is judged on what is there."""
        cfg = self.cfg
        first = today - timedelta(days=max(cfg.lag_days + cfg.period_days, cfg.min_history_days) + 1)
        meters = [c.water_meter for c in self.customers if c.water_meter]
        yesterday = today - timedelta(days=1)
        waited = horizon_ms is not None and horizon_ms >= ts_ms + ROLLUP_WAIT_S * 1000
        if meters and not waited and not rollup_written(self.influx, yesterday):
            # the daily rollup of yesterday is not written yet (continuous queries run after
            # the day ends; an accelerated run writes them as simulated time passes): judging
            # now would miss the newest day, so the check is tried again later (a cheap query)
            raise RollupNotReady(0, f"daily rollup of {yesterday} not written yet")
        data = daily_litres(self.influx, meters, first, yesterday)
        out = []
        for c in self.customers:
            v = compare(c.id, data.get(c.water_meter or "", {}), today, cfg)
            if hysteresis(self.alerts.setdefault(c.id, Hysteresis()), v, cfg):
                out.append(condition_of(v, ts_ms))
        return out
