"""Writes the input series of the golden cases (``cases/<name>/input.csv``), deterministically.

Run ``.venv/bin/python tests/rules/detectors/make_cases.py`` after changing a generator; the
expected conditions (``expected.json``) are written by hand from each case's description.
Timestamps are UTC milliseconds; the demo field's zone is Africa/Casablanca (UTC+1 in
April 2026).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

CASES = Path(__file__).parent / "cases"
TZ = ZoneInfo("Africa/Casablanca")
Row = tuple[int, str, str, object, str]


def ms(local: datetime) -> int:
    return int(local.replace(tzinfo=TZ).timestamp() * 1000)


def local(day: int, h: float = 0.0) -> datetime:
    return datetime(2026, 4, 6) + timedelta(days=day, hours=h)


def meter_reads(device: str, days: int, lph: Callable[[datetime], float], start_m3: float = 100.0,
                bad: set[int] | None = None) -> Iterator[Row]:
    """15-minute totaliser reads of a water meter with flow ``lph(t)`` held over each interval."""
    vol = start_m3
    for i in range(days * 96 + 1):
        t = local(0) + timedelta(minutes=15 * i)
        if i:
            vol += lph(t - timedelta(minutes=15)) / 4 / 1000
        q = "bad" if bad and i in bad else "good"
        yield ms(t), device, "volume_m3", (round(vol, 6) if q == "good" else ""), q


def household(t: datetime) -> float:
    """Use from 06:00 to 23:00, none at night (L/h)."""
    return 30.0 if 6 <= t.hour < 23 else 0.0


def case_continuous_flow_leak() -> list[Row]:
    # a toilet cistern leak of 12 L/h starts on day 1 at 00:00; repaired on day 3 at 10:00
    def lph(t: datetime) -> float:
        leak = 12.0 if local(1) <= t < local(3, 10) else 0.0
        return household(t) + leak
    return list(meter_reads("wm-c0001", 4, lph))


def case_continuous_flow_industrial() -> list[Row]:
    # the dairy (continuous_flow_expected) and a household both flow 24 h a day for 3 days
    rows = list(meter_reads("wm-c0018", 3, lambda t: 900.0))
    rows += list(meter_reads("wm-c0002", 3, lambda t: household(t) + 20.0))
    return rows


def case_continuous_flow_bad_reads() -> list[Row]:
    # a 10 L/h leak all along; reads 40..41 (day 0, 10:00-10:15) are bad, 200 and 201 too
    # (day 2, 02:00-02:15, during the alarm): the bad stretches neither raise nor clear
    return list(meter_reads("wm-c0003", 3, lambda t: household(t) + 10.0, bad={40, 41, 200, 201}))


QUIET_HOURS = [1, 2, 2, 3, 1, 4, 1, 2, 3, 4, 1, 3, 2, 4]


def moving_quiet(t: datetime) -> float:
    """A household that uses 6 L in every hour but one quiet hour a night, which moves
    between 01-02 and 04-05 (day n's quiet hour is QUIET_HOURS[n])."""
    return 0.0 if t.hour == QUIET_HOURS[(t - local(0)).days % len(QUIET_HOURS)] else 6.0


def case_continuous_flow_moving_quiet_hour() -> list[Row]:
    # wm-c0004: the household above for 14 days, no leak. wm-c0005: the same household with
    # an 8 L/h leak from day 3 at 14:00
    rows = list(meter_reads("wm-c0004", 14, moving_quiet))
    rows += list(meter_reads("wm-c0005", 7, lambda t: moving_quiet(t) + (8.0 if t >= local(3, 14) else 0.0)))
    return rows


def nights(inlet: str, levels_m3h: list[float], users: dict[str, list[float]]) -> list[Row]:
    """Inlet flow every 5 min from 00:00 to 06:00 local; the night's minimum hour is
    02:30-03:30 at ``levels_m3h[n]``, 0.3 m3/h more before and after, +/-0.02 m3/h noise
    that cancels within each 15-minute bucket. Night users' meters report ``flow_lph``."""
    rows: list[Row] = []
    for n, level in enumerate(levels_m3h):
        for k in range(72):
            t = local(n, k / 12)
            h = t.hour + t.minute / 60
            m3h = level if 2.5 <= h < 3.75 else level + 0.3
            m3h += 0.02 if k % 3 == 0 else (-0.02 if k % 3 == 1 else 0.0)
            rows.append((ms(t), inlet, "flow_lps", round(m3h / 3.6, 6), "good"))
            for dev, lph in users.items():
                rows.append((ms(t), dev, "flow_lph", lph[n], "good"))
    return rows


def case_night_flow_rise() -> list[Row]:
    base = [3.0, 3.1, 2.95, 3.05, 3.0, 2.9, 3.1, 3.0]
    return nights("inlet-zone-a", [*base, 5.0, 5.0, 3.0, 3.05], {"wm-c0018": [600.0] * 12})


def case_night_flow_legit_users() -> list[Row]:
    # the hotel starts night laundry on nights 8-9: the inlet rises by 1.5 m3/h, and so
    # does the hotel's own meter: net night flow does not move, no alarm
    inlet = [2.5, 2.55, 2.45, 2.5, 2.5, 2.45, 2.55, 2.5, 4.0, 4.0, 2.5]
    hotel = [200.0] * 8 + [1700.0, 1700.0, 200.0]
    return nights("inlet-zone-b", inlet, {"wm-c0134": hotel})


def case_night_flow_small_leak_night_user() -> list[Row]:
    # the metering line's zone (examples/meter-line.yaml: 20 connections, 1.5 km of mains):
    # the dairy (wm-c0018, a metered night user) draws 600-650 L/h at night; the rest of the
    # zone's minimum hour is 0.03 m3/h, less than the estimated legitimate use (residents
    # 0.048 + one shop 0.05 m3/h); a 0.2 L/s (0.72 m3/h) leak from night 8
    dairy = [620.0, 650.0, 600.0, 640.0, 610.0, 630.0, 645.0, 605.0, 625.0, 615.0, 635.0, 640.0]
    rest = [0.03, 0.032, 0.028, 0.031, 0.029, 0.03, 0.033, 0.027, 0.03, 0.031, 0.029, 0.03]
    leak = [0.0] * 8 + [0.72] * 4
    inlet = [round(d / 1000 + r + lk, 4) for d, r, lk in zip(dairy, rest, leak, strict=True)]
    return nights("inlet-zone-a", inlet, {"wm-c0018": dairy})


def burst_series(step_lps: float, drop_bar: float) -> list[Row]:
    """Zone A inflow with a daily profile, every 2 minutes for 4 days, pressure at 3.8 bar;
    on day 3 at 10:02 the flow steps up by ``step_lps`` and pressure falls by ``drop_bar``
    for 1 h 30 min."""
    rows: list[Row] = []
    for i in range(4 * 720):
        t = local(0) + timedelta(minutes=2 * i)
        h = t.hour + t.minute / 60
        flow = 1.0 + (1.2 if 7 <= h < 22 else 0.0) + (0.6 if 12 <= h < 14 else 0.0)
        flow += (0.03, -0.03, 0.01, -0.01, 0.0)[i % 5]
        press = 3.8 - (0.2 if 7 <= h < 22 else 0.0)
        burst = local(3, 10 + 2 / 60) <= t < local(3, 11.5 + 2 / 60)
        if burst:
            flow += step_lps
            press -= drop_bar
        rows.append((ms(t), "inlet-zone-a", "flow_lps", round(flow, 4), "good"))
        rows.append((ms(t), "pressure-zone-a", "pressure_bar", round(press, 4), "good"))
    return rows


def case_burst() -> list[Row]:
    return burst_series(1.5, 0.6)


def case_burst_no_pressure_drop() -> list[Row]:
    # the same step of inflow with pressure unchanged: a filling tank, not a burst
    return burst_series(1.5, 0.0)


def tx_volts(dev: str, t0: int, t1: int, v: Callable[[int], float], every_s: int = 30) -> list[Row]:
    rows: list[Row] = []
    for ts in range(t0, t1, every_s * 1000):
        for p in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v"):
            rows.append((ts, dev, p, v(ts), "good"))
    return rows


def tx1a_meters() -> list[str]:
    return [f"em-c{i:04d}" for i in range(1, 41)]


def case_outage_transformer() -> list[Row]:
    # tx-1a loses supply at 10:00:00 for 12 min; its LV meter reads 0 V (it is powered from
    # the substation side in this case), its 40 meters send a last gasp 40 s later, half of
    # them also go comm_fail; at 10:12 power returns and every meter says power_restored
    t0, cut, back, t1 = ms(local(0, 9.9)), ms(local(0, 10)), ms(local(0, 10.2)), ms(local(0, 10.4))
    rows = tx_volts("tx-1a-meter", t0, t1, lambda ts: 0.0 if cut <= ts < back else 231.0)
    for i, m in enumerate(tx1a_meters()):
        rows.append((cut + 40_000 + i * 100, m, "last_gasp", True, "good"))
        if i % 2:
            rows.append((cut + 90_000 + i * 100, m, "_status", "comm_fail", "good"))
            rows.append((back + 20_000 + i * 100, m, "_status", "online", "good"))
        rows.append((back + 5_000 + i * 100, m, "power_restored", True, "good"))
    return rows


def case_outage_last_gasp_only() -> list[Row]:
    # tx-1a's LV meter itself goes comm_fail (it lost power too); 30 meters send a last gasp
    # and 5 go silent: 35/40 >= 60 % -> one outage by last gasp; voltage back at 10:20
    cut, back = ms(local(0, 10)), ms(local(0, 10 + 20 / 60))
    rows: list[Row] = tx_volts("tx-1a-meter", ms(local(0, 9.9)), cut, lambda ts: 230.0)
    rows.append((cut + 1_000, "tx-1a-meter", "_status", "comm_fail", "good"))
    for i, m in enumerate(tx1a_meters()[:35]):
        if i < 30:
            rows.append((cut + 40_000 + i * 200, m, "last_gasp", True, "good"))
        else:
            rows.append((cut + 60_000 + i * 200, m, "_status", "comm_fail", "good"))
    rows.append((back, "tx-1a-meter", "_status", "online", "good"))
    rows += tx_volts("tx-1a-meter", back, back + 120_000, lambda ts: 229.0)
    return rows


def case_outage_comm_loss_feeder_live() -> list[Row]:
    # the Zone A concentrator's link drops: all 40 meters of tx-1a go comm_fail, no last
    # gasp, while tx-1a's LV meter and feeder-1 keep reading normal voltage: no outage
    t0, t1 = ms(local(0, 9.9)), ms(local(0, 11))
    rows = tx_volts("tx-1a-meter", t0, t1, lambda ts: 230.5)
    rows += tx_volts("ss1-feeder-1", t0, t1, lambda ts: 11050.0)
    for i, m in enumerate(tx1a_meters()):
        rows.append((ms(local(0, 10)) + i * 100, m, "_status", "comm_fail", "good"))
        rows.append((ms(local(0, 10.75)) + i * 100, m, "_status", "online", "good"))
    return rows


def case_outage_feeder_momentary() -> list[Row]:
    # feeder-1 trips and recloses: its bay reads 0 V from 10:00:00 to 10:02:00; both of its
    # transformers' LV meters read 0 V too: one feeder outage (80 customers), momentary
    t0, cut, back, t1 = ms(local(0, 9.95)), ms(local(0, 10)), ms(local(0, 10 + 2 / 60)), ms(local(0, 10.1))
    rows = tx_volts("ss1-feeder-1", t0, t1, lambda ts: 0.0 if cut <= ts < back else 11000.0, every_s=10)
    for dev in ("tx-1a-meter", "tx-1b-meter"):
        rows += tx_volts(dev, t0 + 5_000, t1, lambda ts: 0.0 if cut <= ts < back else 230.0)
    return rows


def arrival_outage_feeder_late_bay() -> list[Row]:
    # The feeder-outage replay: feeder-1 loses supply at 10:00:00; tx-1a's LV meter reports
    # 0 V at once, but the feeder bay's readings and tx-1b's (other buses, other poll cycles)
    # arrive 70 s late. Rows are in ARRIVAL order: the 0 V readings of the bay and of tx-1b
    # stamped 10:00:00.. arrive after tx-1a's 10:01:10. One outage, on feeder-1, none on tx-1a.
    t0, cut, t1 = ms(local(0, 9.95)), ms(local(0, 10)), ms(local(0, 10.05))
    early = tx_volts("tx-1a-meter", t0 + 5_000, t1, lambda ts: 0.0 if ts >= cut else 230.0, every_s=10)
    slow = tx_volts("tx-1b-meter", t0 + 5_000, t1, lambda ts: 0.0 if ts >= cut else 230.0, every_s=10)
    slow += tx_volts("ss1-feeder-1", t0, t1, lambda ts: 0.0 if ts >= cut else 6350.0, every_s=10)
    late = cut + 70_000
    rows = sorted([r for r in early + slow if r[0] < cut], key=lambda r: r[0])
    rows += sorted([r for r in early if cut <= r[0] <= late], key=lambda r: r[0])
    rows += sorted([r for r in slow if r[0] >= cut] + [r for r in early if r[0] > late], key=lambda r: r[0])
    return rows


def case_voltage_quality() -> list[Row]:
    # tx-2a: 10:00-10:20 phases 233/231/232 V; 10:20-10:40 L1 at 256 V (+11.3 %, imbalance
    # 6.3 %); 10:40-11:00 back to normal. Power 40 kW on the LV meter, 250 kVA nameplate.
    t0, t1 = ms(local(0, 10)), ms(local(0, 11))
    hi0, hi1 = ms(local(0, 10 + 20 / 60)), ms(local(0, 10 + 40 / 60))
    rows: list[Row] = []
    for ts in range(t0, t1, 30_000):
        hi = hi0 <= ts < hi1
        rows += [(ts, "tx-2a-meter", "voltage_l1_v", 256.0 if hi else 233.0, "good"),
                 (ts, "tx-2a-meter", "voltage_l2_v", 231.0, "good"),
                 (ts, "tx-2a-meter", "voltage_l3_v", 232.0, "good"),
                 (ts, "tx-2a-meter", "total_power_w", 40000.0, "good")]
    return rows


def case_overload() -> list[Row]:
    # tx-1b (400 kVA): LV meter 300 kW / 90 kvar (313 kVA) until 18:10, then 390 kW /
    # 150 kvar (418 kVA, 104 %) until 18:40, then 320 kW / 100 kvar
    t0, t1 = ms(local(0, 18)), ms(local(0, 19))
    a, b = ms(local(0, 18 + 10 / 60)), ms(local(0, 18 + 40 / 60))
    rows: list[Row] = []
    for ts in range(t0, t1, 30_000):
        p, q = (390e3, 150e3) if a <= ts < b else ((300e3, 90e3) if ts < a else (320e3, 100e3))
        rows += [(ts, "tx-1b-meter", "total_power_w", p, "good"),
                 (ts, "tx-1b-meter", "total_reactive_power_var", q, "good")]
        rows += [(ts, "tx-1b-meter", f"voltage_l{k}_v", 229.0, "good") for k in (1, 2, 3)]
    return rows


def case_water_balance() -> list[Row]:
    # small field: inlet 60 m3/day flat; three customers 0.3, 0.45, 0.6 m3/day; a fourth
    # customer's meter never reports
    rows = list(meter_reads("inlet-1", 2, lambda t: 2500.0, start_m3=5000.0))
    for dev, lpd in (("wm-1", 300.0), ("wm-2", 450.0), ("wm-3", 600.0)):
        rows += list(meter_reads(dev, 2, lambda t, lpd=lpd: lpd / 24))
    return rows


def series_of_days(first: str, days: int, litres: Callable[[date], float | None]) -> list[tuple[str, str]]:
    d0 = date.fromisoformat(first)
    rows = []
    for i in range(days):
        d = d0 + timedelta(days=i)
        v = litres(d)
        rows.append((d.isoformat(), "" if v is None else f"{v:g}"))
    return rows


def daily_oc_alert() -> list[tuple[str, str]]:
    # 420 days to 2026-03-14; 214 L/day, and 312 L/day from 1 to 14 March 2026 (a leak)
    return series_of_days("2025-01-18", 421, lambda d: 312.0 if d >= date(2026, 3, 1) else 214.0)


def daily_oc_short_history() -> list[tuple[str, str]]:
    # four months of history (a new customer since 2025-11-15): 200 L/day, then 280 L/day
    # from 1 March: no same period last year; compared with the 4 weeks before, +40 %
    return series_of_days("2025-11-15", 120, lambda d: 280.0 if d >= date(2026, 3, 1) else 200.0)


def daily_oc_holiday() -> list[tuple[str, str]]:
    # period 2026-04-25..05-08 at 220 L/day vs 210 a year before, except a family gathering
    # on the 1 May holiday (3000 L) and a holiday away from home on 1 May 2025 (20 L)
    def lit(d: date) -> float:
        if d == date(2026, 5, 1):
            return 3000.0
        if d == date(2025, 5, 1):
            return 20.0
        return 220.0 if d >= date(2026, 4, 25) else 210.0
    return series_of_days("2025-03-01", 434, lit)


def daily_oc_implausible() -> list[tuple[str, str]]:
    # period 2026-06-01..14 at 230 L/day vs 220; a meter swap gives -150000 L on 06-03, a
    # wrong read 52000 L on 06-09, 06-11 is estimated (empty), last year's 06-06 reads 0
    def lit(d: date) -> float | None:
        special = {date(2026, 6, 3): -150000.0, date(2026, 6, 9): 52000.0, date(2026, 6, 11): None,
                   date(2025, 6, 7): 0.0}
        if d in special:
            return special[d]
        return 230.0 if d >= date(2026, 6, 1) else 220.0
    return series_of_days("2025-04-01", 440, lit)


def daily_oc_flapping() -> list[tuple[str, str]]:
    # 200 L/day a year ago; from 1 March 2026 the customer uses about 1.3 times that, with a
    # 10-day wobble of +/-6 % (260 +/- 12 L/day), back to 200 L/day from 15 April: the
    # 14-day ratio climbs to 1.311 on 15 March, then oscillates between 1.287 and 1.313
    # for a month, then falls back to 1.0
    def lit(d: date) -> float:
        k = (d - date(2026, 3, 1)).days
        if d < date(2026, 3, 1) or k >= 45:
            return 200.0
        return round(200 * (1.30 + 0.06 * math.sin(2 * math.pi * k / 10)), 1)
    return series_of_days("2025-01-01", 495, lit)


DAILY: dict[str, Callable[[], list[tuple[str, str]]]] = {
    name.removeprefix("daily_"): fn for name, fn in globals().items() if name.startswith("daily_")
}

ARRIVAL: dict[str, Callable[[], list[Row]]] = {
    name.removeprefix("arrival_"): fn for name, fn in globals().items() if name.startswith("arrival_")
}

GENERATORS: dict[str, Callable[[], list[Row]]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


def main() -> None:
    for name, gen in GENERATORS.items():
        folder = CASES / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = sorted(gen(), key=lambda r: r[0])
        with (folder / "input.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts_ms", "device", "point", "value", "quality"])
            for ts, dev, point, value, q in rows:
                w.writerow([ts, dev, point, str(value).lower() if isinstance(value, bool) else value, q])
        print(f"{name}: {len(rows)} rows")
    for name, gen in ARRIVAL.items():  # rows kept in the order they arrive, not by timestamp
        folder = CASES / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "input.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts_ms", "device", "point", "value", "quality"])
            w.writerows(gen())
        print(f"{name}: {len(gen())} rows (arrival order)")
    for name, gen in DAILY.items():
        folder = CASES / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "daily.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["day", "litres"])
            w.writerows(gen())
        print(f"{name}: daily")


if __name__ == "__main__":
    main()
