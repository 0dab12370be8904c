"""Customer demand: water and electricity use as a closed-form function of time.

Every figure is a pure function of (seed, customer, instant), so the live simulator and
the history backfill agree to the litre, and two runs with one seed give one answer.

The unit of randomness is the *customer-day* (local day of the field's time zone, at a
fixed offset): a day total (mean use x weekday x season x noise) and, only for the days
actually looked at, its 96 quarter-hour slots. Slot shapes are normalised so the slots of
a day add up to the day total exactly: the totaliser at midnight is a sum of day totals
(cheap for years of days), and within a day it is the running sum of the slots. Flow is
constant within a slot, so the totaliser is exactly the integral of the flow.

Night water use follows the UK/IWA practice of domain.md: about 6 % of the residents are
active in a night hour, each use a 10 L cistern; it comes as whole 10 L events placed in
01:00-05:00, with one of those four hours left quiet per household (everyone asleep), so
that a meter with no quiet hour in 24 h is a leak, not a large family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from aquavolt.field import Customer, CustomerType

DAY_S = 86400
SLOT_S = 900
SLOTS = DAY_S // SLOT_S
REFERENCE = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
"""Meters are installed on this day: totalisers count from their initial reading here."""

NIGHT_HOURS = (1, 2, 3, 4)
NIGHT_ACTIVE_SHARE = 0.06  # of residents active in a night hour (domain.md)
CISTERN_L = 10.0
UNDER_REGISTRATION = 0.98  # customer meters read 2 % low (apparent losses)

Array = NDArray[np.float64]

# Hourly multipliers of the mean hourly use, local time (0..23).
_WATER = {
    "residential": [0.35, 0, 0, 0, 0, 0.35, 0.9, 1.8, 2.0, 1.6, 1.3, 1.2,
                    1.3, 1.4, 1.1, 0.9, 0.9, 1.0, 1.3, 1.6, 1.7, 1.5, 1.0, 0.6],
    "commercial": [0, 0, 0, 0, 0, 0, 0, 0.6, 1.6, 1.9, 2.0, 2.0,
                   2.1, 2.0, 1.9, 1.9, 1.8, 1.6, 1.2, 0.6, 0, 0, 0, 0],
    "industrial": [0.3, 0.3, 0.3, 0.3, 0.3, 0.5, 1.3, 1.5, 1.5, 1.5, 1.5, 1.4,
                   1.3, 1.5, 1.5, 1.5, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.5, 0.3],
    # two shifts (06:00-22:00), closed at night: the works a register does not flag
    # ``continuous_flow_expected``; the flagged ones run round the clock ("industrial")
    "industrial_shift": [0, 0, 0, 0, 0, 0.3, 1.4, 1.6, 1.6, 1.6, 1.6, 1.5,
                         1.4, 1.6, 1.6, 1.6, 1.6, 1.5, 1.4, 1.3, 1.2, 1.0, 0.2, 0],
    "night_user": [0.6, 0.5, 0.5, 0.5, 0.5, 0.6, 0.9, 1.4, 1.6, 1.3, 1.1, 1.0,
                   1.1, 1.2, 1.0, 0.9, 0.9, 1.0, 1.2, 1.4, 1.4, 1.3, 1.0, 0.8],
}
_POWER = {
    "residential": [0.5, 0.45, 0.4, 0.4, 0.4, 0.5, 0.8, 1.1, 1.0, 0.9, 0.85, 0.85,
                    0.9, 0.9, 0.85, 0.85, 0.9, 1.1, 1.5, 1.9, 2.0, 1.8, 1.3, 0.8],
    "commercial": [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.9, 1.5, 1.7, 1.8, 1.8,
                   1.8, 1.8, 1.8, 1.7, 1.7, 1.6, 1.4, 1.1, 0.6, 0.4, 0.3, 0.3],
    "industrial": [0.7, 0.7, 0.7, 0.7, 0.7, 0.8, 1.1, 1.2, 1.2, 1.2, 1.2, 1.2,
                   1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.1, 1.1, 1.0, 1.0, 0.8, 0.7],
}
# Lognormal sigma of a customer's quarter-hour use around its type's shape. A household's use
# is erratic (showers, washing machines); commercial and industrial use follows opening hours
# and processes: an industrial customer's 15 m3 a day does not come in random 15-minute gushes
# of several litres per second, which a small district's inflow would show as a burst.
_SLOT_SIGMA = {"residential": 0.6, "night_user": 0.6, "commercial": 0.3, "industrial": 0.15,
               "industrial_shift": 0.15}

# Mean daily use: residential per resident (WHO/utility figure for towns, 130 L/person/day;
# 1.2 kWh/person/day plus 2.5 kWh/household), others per connection.
_WATER_L_DAY = {"residential": 130.0, "commercial": 1200.0, "industrial": 15000.0}
_ENERGY_KWH_DAY = {"residential": 1.2, "commercial": 40.0, "industrial": 300.0}


def _slots(hourly: list[float]) -> Array:
    w = np.repeat(np.asarray(hourly, dtype=np.float64), SLOTS // 24)
    return w / w.sum()


def _before(slots: Array) -> Array:
    """Exclusive running sum along the day: what came before each slot."""
    out = np.zeros_like(slots)
    np.cumsum(slots[:, :-1], axis=1, out=out[:, 1:])
    return out


def utc_offset_s(timezone: str, at: float) -> int:
    """The zone's UTC offset at ``at`` (held fixed for a run: no DST jumps in a day)."""
    from zoneinfo import ZoneInfo

    off = datetime.fromtimestamp(at, ZoneInfo(timezone)).utcoffset()
    return int(off.total_seconds()) if off else 0


@dataclass(frozen=True)
class Totals:
    """Per customer, at one instant: totalisers since REFERENCE and rates."""

    water_l: Array  # true volume used since REFERENCE (litres)
    energy_kwh: Array
    flow_lph: Array
    power_w: Array


class Demand:
    """Closed-form demand of every customer of a field (vectorised over customers)."""

    def __init__(self, customers: list[Customer], seed: int, offset_s: int = 0) -> None:
        self.n = len(customers)
        self.seed = seed
        self.offset_s = offset_s
        kinds = []
        for c in customers:
            if c.night_user:
                kinds.append("night_user")
            elif c.type is CustomerType.INDUSTRIAL and not c.continuous_flow_expected:
                kinds.append("industrial_shift")
            else:
                kinds.append(c.type.value)
        self.kind = kinds
        rng = np.random.default_rng([seed, 0xC0FFEE])
        persona = rng.lognormal(0.0, 0.25, self.n)
        occ = np.array([max(c.occupants, 1) for c in customers], dtype=np.float64)
        resid = np.array([c.type is CustomerType.RESIDENTIAL for c in customers])
        base_w = np.array([_WATER_L_DAY[c.type.value] for c in customers])
        base_e = np.array([_ENERGY_KWH_DAY[c.type.value] for c in customers])
        self.water_mean_l = np.where(resid, base_w * occ, base_w) * persona
        self.energy_mean_kwh = np.where(resid, base_e * occ + 2.5, base_e) * persona
        self.occupants = np.where(resid, occ, 0.0)
        self.continuous = np.array([c.continuous_flow_expected for c in customers])
        self.water_start_l = rng.uniform(20e3, 900e3, self.n)  # reading at installation
        self.energy_start_kwh = rng.uniform(500, 30000, self.n)
        wshape = np.stack([_slots(_WATER[k]) for k in _WATER])
        eshape = np.stack([_slots(_POWER.get(k.split("_")[0], _POWER["residential"])) for k in _WATER])
        idx = np.array([list(_WATER).index(k) for k in kinds], dtype=np.int64)
        self._wshape = wshape[idx]  # (n, SLOTS), rows sum to 1
        self._eshape = eshape[idx]
        busy = {"residential": (1.08, 1.10), "commercial": (0.55, 0.6), "industrial": (0.55, 0.6),
                "industrial_shift": (0.55, 0.6)}
        self._weekend_w = np.array([busy.get(k, (1.0, 1.0))[0] for k in kinds])
        self._weekend_e = np.array([busy.get(k, (1.0, 1.0))[1] for k in kinds])
        # quarter-hour irregularity: a household's taps are erratic, a works' process water is not
        self._slot_sigma = np.array([_SLOT_SIGMA.get(k, 0.6) for k in kinds])
        self._cum: dict[int, tuple[Array, Array]] = {}
        self._recent: list[int] = []
        self._slot_cache: dict[int, tuple[Array, Array, Array, Array, Array, Array]] = {}

    # ------------------------------------------------------------ days
    def local_day(self, t: float) -> int:
        return math.floor((t + self.offset_s) / DAY_S)

    def day_start(self, day: int) -> float:
        return day * DAY_S - self.offset_s

    def _night_expected_l(self) -> Array:
        # NIGHT_ACTIVE_SHARE of residents per night hour, minus the quiet hour
        return self.occupants * NIGHT_ACTIVE_SHARE * CISTERN_L * (len(NIGHT_HOURS) - 1)

    def day_totals(self, day: int) -> tuple[Array, Array]:
        """(water litres, energy kWh) of every customer on a local day."""
        wnoise, enoise, events = self._draws(day)
        dt = datetime.fromtimestamp(self.day_start(day) + 43200, UTC)
        doy = dt.timetuple().tm_yday
        season_w = 1.0 + 0.18 * math.cos(2 * math.pi * (doy - 200) / 365.25)
        season_e = 1.0 + 0.12 * math.cos(2 * math.pi * (doy - 200) / 365.25) ** 2
        weekend = dt.weekday() >= 5
        wk_w = self._weekend_w if weekend else 1.0
        wk_e = self._weekend_e if weekend else 1.0
        water = self.water_mean_l * season_w * wk_w * wnoise
        night = events * CISTERN_L
        day_part = np.maximum(water - self._night_expected_l(), 0.0)
        base = np.where(self.continuous, 0.25 * water, 0.0)
        water_total = day_part * np.where(self.continuous, 0.75, 1.0) + base + night
        energy = self.energy_mean_kwh * season_e * wk_e * enoise
        return water_total, energy

    def _draws(self, day: int) -> tuple[Array, Array, NDArray[np.int64]]:
        rng = np.random.default_rng([self.seed, day, 1])
        wnoise = rng.lognormal(-0.0112, 0.15, self.n)
        enoise = rng.lognormal(-0.0050, 0.10, self.n)
        events = rng.poisson(self._night_expected_l() / CISTERN_L)
        return wnoise, enoise, events

    def cumulative_before(self, day: int) -> tuple[Array, Array]:
        """Totals from REFERENCE up to the start of ``day``: walks forward from the nearest
        cached day (checkpoints every 32 days and the last few days asked)."""
        first = self.local_day(REFERENCE)
        if day <= first:
            return np.zeros(self.n), np.zeros(self.n)
        hit = self._cum.get(day)
        if hit is not None:
            return hit
        below = [d for d in self._cum if d <= day]
        d0 = max(below) if below else first
        w, e = self._cum[d0] if below else (np.zeros(self.n), np.zeros(self.n))
        w, e = w.copy(), e.copy()
        for d in range(d0, day):
            dw, de = self.day_totals(d)
            w += dw
            e += de
            if (d + 1 - first) % 32 == 0:
                self._cum[d + 1] = (w.copy(), e.copy())
        self._cum[day] = (w, e)
        self._recent.append(day)
        if len(self._recent) > 8:
            old = self._recent.pop(0)
            if (old - first) % 32 and old not in self._recent:
                self._cum.pop(old, None)
        return w, e

    def day_slots(self, day: int) -> tuple[Array, Array, Array, Array, Array, Array]:
        """Water litres and energy kWh per customer per quarter hour (n, SLOTS), the sums before
        each slot, and the day totals."""
        hit = self._slot_cache.get(day)
        if hit is not None:
            return hit
        water_total, energy = self.day_totals(day)
        rng = np.random.default_rng([self.seed, day, 2])
        events = self._draws(day)[2]
        # continuous part: type shape x lognormal slot noise, normalised per customer-day
        shape = self._wshape * rng.lognormal(0.0, 1.0, (self.n, SLOTS)) ** self._slot_sigma[:, None]
        shape /= shape.sum(axis=1, keepdims=True)
        night = events * CISTERN_L
        water = shape * (water_total - night)[:, None]
        # night events: each 10 L in a random night slot, one night hour kept quiet
        quiet = rng.integers(0, len(NIGHT_HOURS), self.n)
        hours = np.array(NIGHT_HOURS)
        for i in np.nonzero(events)[0]:
            choices = np.delete(hours, quiet[i])
            hs = rng.choice(choices, int(events[i]))
            qs = rng.integers(0, 4, int(events[i]))
            np.add.at(water[i], hs * 4 + qs, CISTERN_L)
        eshape = self._eshape * rng.lognormal(0.0, 0.25, (self.n, SLOTS))
        eshape /= eshape.sum(axis=1, keepdims=True)
        energy_slots = eshape * energy[:, None]
        # running sums *before* each slot: value(t) = before + slot * fraction never decreases
        out = (water, energy_slots, _before(water), _before(energy_slots), water_total, energy)
        if len(self._slot_cache) > 4:
            self._slot_cache.pop(min(self._slot_cache))
        self._slot_cache[day] = out
        return out

    # ------------------------------------------------------------ instants
    def at(self, t: float) -> Totals:
        day = self.local_day(t)
        cw, ce = self.cumulative_before(day)
        sw, se, before_w, before_e, day_w, day_e = self.day_slots(day)
        into = t - self.day_start(day)
        slot = min(int(into // SLOT_S), SLOTS - 1)
        frac = (into - slot * SLOT_S) / SLOT_S
        # capped by tomorrow's starting value, computed with the very same additions as the
        # day walk, so float rounding never makes a totaliser step back at midnight
        water = np.maximum(np.minimum(cw + (before_w[:, slot] + sw[:, slot] * frac), cw + day_w), cw)
        energy = np.maximum(np.minimum(ce + (before_e[:, slot] + se[:, slot] * frac), ce + day_e), ce)
        return Totals(water, energy, sw[:, slot] * (3600 / SLOT_S), se[:, slot] * (3600 / SLOT_S) * 1000)

    def water_meter_m3(self, water_l: Array, i: int | None = None) -> Array:
        """What the customer meters show for a true volume (initial reading, under-registration);
        with ``i``, customer i only (``water_l`` still the whole array)."""
        if i is not None:
            return (self.water_start_l[i] + water_l[i] * UNDER_REGISTRATION) / 1000.0  # type: ignore[no-any-return]
        return (self.water_start_l + water_l * UNDER_REGISTRATION) / 1000.0

    def energy_meter_kwh(self, energy_kwh: Array, i: int | None = None) -> Array:
        if i is not None:
            return self.energy_start_kwh[i] + energy_kwh[i]  # type: ignore[no-any-return]
        return self.energy_start_kwh + energy_kwh
