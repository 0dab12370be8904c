"""``aquavolt sim backfill``: months of meter history in InfluxDB, from the live demand model.

Every customer water and electricity meter and every zone inlet meter gets, per hour (and
at the end instant itself), its totaliser and its rate, in the kernel schema (measurement
``telemetry``, tags gateway/device/point, fields ``value`` and ``quality=192i``), for the
last ``raw_days`` days (28 by default: what the live detectors look back on, four weeks of
a burst profile, a week of night flows). The daily rollup ``telemetry_1d`` (retention
policy ``rp_1d``: mean, min, max, sum, count, last), which the over-consumption check reads
for a year back, is written for every day, computed from the same hourly values, since
continuous queries never look back. Batches go out on a few writers at once: InfluxDB
takes them on its own cores while the next lines are formatted. The figures are the live
simulator's own closed forms for the same seed, so at the end instant the history and a
simulator started there show the same totalisers: no jump.

On a terminal it shows a progress bar on standard error (hours modelled, then points
written: rate and time left); elsewhere one summary line there; ``--no-progress`` neither.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from aquavolt.clock import parse_instant
from aquavolt.config import LoadedField, load_field
from aquavolt.influx import Influx, InfluxError
from aquavolt.progressbar import ProgressBar
from aquavolt.schema import ROLLUPS, TELEMETRY, continuous_queries, escape_tag
from aquavolt.settings import InfluxSettings
from aquavolt.simulators.demand import REFERENCE, UNDER_REGISTRATION
from aquavolt.simulators.model import FieldModel

BATCH = 20000
WRITERS = 3
RAW_DAYS = 28
"""Days of hourly raw points by default; older days get only their daily rollup."""


@dataclass(frozen=True)
class Series:
    gateway: str
    device: str
    point: str

    def prefix(self, measurement: str) -> str:
        return (f"{measurement},device={escape_tag(self.device)},gateway={escape_tag(self.gateway)},"
                f"point={escape_tag(self.point)} ")


def instants(end: float, days: int, step_s: int = 3600) -> np.ndarray:
    """The timestamps (s) of the history: every ``step_s`` from ``days`` before ``end``, and
    ``end`` itself."""
    start = math.ceil((end - days * 86400) / step_s) * step_s
    times = np.arange(start, end, step_s, dtype=np.float64)
    if len(times) == 0 or times[-1] != end:
        times = np.append(times, end)
    return times


def history(loaded: LoadedField, seed: int, end: float, days: int, step_s: int = 3600,
            on_instant: Callable[[int], object] | None = None
            ) -> tuple[list[Series], np.ndarray, np.ndarray]:
    """(series, timestamps in s, values[series, time]) for every meter, clean history;
    ``on_instant(k)`` after each instant is computed (k of ``len(instants(...))``)."""
    f = loaded.field
    model = FieldModel(loaded, seed, end, _NoFaults(), 3600)  # type: ignore[arg-type]
    demand = model.demand  # the live simulator's own demand, same seed, same offset
    times = instants(end, days, step_s)
    series: list[Series] = []
    columns: list[tuple[str, int]] = []  # (quantity, index)
    gw_of = {d: g.id for d, (g, _dev) in f.devices.items()}
    for i, c in enumerate(f.customers):
        if c.water_meter:
            series += [Series(gw_of[c.water_meter], c.water_meter, "volume_m3"),
                       Series(gw_of[c.water_meter], c.water_meter, "flow_lph")]
            columns += [("wvol", i), ("wflow", i)]
        if c.electricity_meter:
            series += [Series(gw_of[c.electricity_meter], c.electricity_meter, "energy_kwh"),
                       Series(gw_of[c.electricity_meter], c.electricity_meter, "power_w")]
            columns += [("evol", i), ("epow", i)]
    for z, zone in enumerate(f.water.zones):
        for dev in zone.inlet_meters:
            series += [Series(gw_of[dev], dev, "volume_m3"), Series(gw_of[dev], dev, "flow_lps")]
            share = z * 1000 + len(zone.inlet_meters)  # zone and number of inlets sharing it
            columns += [("zvol", share), ("zflow", share)]
    values = np.empty((len(series), len(times)))
    kind = np.array([k for k, _ in columns])
    idx = np.array([i for _, i in columns])
    nz = len(f.water.zones)
    bg = model.background_lps()
    for k, t in enumerate(times):
        tot = demand.at(float(t))
        zone_flow = np.bincount(model.cust_zone, tot.flow_lph / 3600, minlength=nz + 1)[:nz] + bg
        zone_vol = (model.zone_volume0_m3 + np.bincount(model.cust_zone, tot.water_l / 1000,
                                                        minlength=nz + 1)[:nz]
                    + bg * (t - REFERENCE) / 1000)
        col = np.empty(len(series))
        m = kind == "wvol"
        col[m] = demand.water_meter_m3(tot.water_l)[idx[m]]
        m = kind == "wflow"
        col[m] = tot.flow_lph[idx[m]] * UNDER_REGISTRATION
        m = kind == "evol"
        col[m] = demand.energy_meter_kwh(tot.energy_kwh)[idx[m]]
        m = kind == "epow"
        col[m] = tot.power_w[idx[m]]
        for name, arr in (("zvol", zone_vol), ("zflow", zone_flow)):
            m = kind == name
            col[m] = arr[idx[m] // 1000] / (idx[m] % 1000)
        values[:, k] = col
        if on_instant is not None:
            on_instant(k + 1)
    return series, times, values


class _NoFaults:
    """An empty fault book: history is clean."""

    faults: dict[str, object] = {}
    version = 0

    def of(self, *_: object) -> list[object]:
        return []

    def active(self, *_: object, **__: object) -> list[object]:
        return []


def raw_lines(series: list[Series], times: np.ndarray, values: np.ndarray, since: float = -math.inf
              ) -> Iterator[str]:
    first = int(np.searchsorted(times, since))
    ts = [str(round(t * 1000)) for t in times[first:]]
    for s, row in zip(series, values, strict=True):
        pre = s.prefix(TELEMETRY) + "value="
        for t, v in zip(ts, row[first:].tolist(), strict=True):
            yield f"{pre}{v!r},quality=192i {t}"


def daily_lines(series: list[Series], times: np.ndarray, values: np.ndarray) -> Iterator[str]:
    """The ``telemetry_1d`` rollup, per UTC day as the continuous query groups them."""
    meas = next(m for rp, _d, i, m in ROLLUPS if i == "1d")
    day = (times // 86400).astype(np.int64)
    bounds = np.flatnonzero(np.diff(day)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(times)]])
    for s, row in zip(series, values, strict=True):
        pre = s.prefix(meas)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            chunk = row[a:b]
            yield (f"{pre}mean={float(chunk.mean())!r},min={float(chunk.min())!r},"
                   f"max={float(chunk.max())!r},sum={float(chunk.sum())!r},count={b - a}i,"
                   f"last={float(chunk[-1])!r} {int(day[a]) * 86400000}")


def write_all(influx: Influx, lines: Iterator[str], writers: int = WRITERS,
              on_written: Callable[[int], object] | None = None) -> int:
    """Write in batches of ``BATCH`` lines, ``writers`` requests in flight at most;
    ``on_written(n)`` each time a batch of ``n`` lines is acknowledged."""
    n = 0
    batch: list[str] = []

    def settle(item: tuple[Any, int]) -> None:
        item[0].result()  # raises the first InfluxError
        if on_written is not None:
            on_written(item[1])

    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="backfill-writer") as pool:
        pending: list[tuple[Any, int]] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= BATCH:
                pending.append((pool.submit(influx.write, batch), len(batch)))
                n += len(batch)
                batch = []
                if len(pending) >= 2 * writers:  # bound the lines held in memory
                    settle(pending.pop(0))
        if batch:
            pending.append((pool.submit(influx.write, batch), len(batch)))
            n += len(batch)
        for item in pending:
            settle(item)
    return n


def backfill(loaded: LoadedField, settings: InfluxSettings, seed: int, end: float, days: int,
             step_s: int = 3600, raw_days: int = RAW_DAYS, bar: ProgressBar | None = None
             ) -> dict[str, float]:
    """Write the history; ``bar`` (if any) follows the hours modelled, then the points written."""
    bar = bar if bar is not None else ProgressBar("backfill", 0, enabled=False)
    t0 = time.monotonic()
    influx = Influx(settings)
    influx.execute(continuous_queries(settings.database))
    bar.phase("model", len(instants(end, days, step_s)), "instants")
    series, times, values = history(loaded, seed, end, days, step_s, on_instant=bar.update)
    t1 = time.monotonic()
    since = end - min(raw_days, days) * 86400
    # whole UTC days only: the day the history ends on belongs to the live run, whose daily
    # rollup is written once that day is over (a row of its first instant alone would look
    # like a finished day to the daily over-consumption check)
    whole = times < end // 86400 * 86400
    n_days = len(np.unique(times[whole] // 86400))
    bar.phase("write", len(series) * (len(times) - int(np.searchsorted(times, since)) + n_days), "points")
    raw = write_all(influx, raw_lines(series, times, values, since=since), on_written=bar.advance)
    rp_1d = next(rp for rp, _d, i, _m in ROLLUPS if i == "1d")
    daily = write_all(Influx(settings.model_copy(update={"retention_policy": rp_1d})),
                      daily_lines(series, times[whole], values[:, whole]), on_written=bar.advance)
    t2 = time.monotonic()
    return {"series": len(series), "points": raw, "daily_points": daily,
            "model_s": t1 - t0, "write_s": t2 - t1, "points_per_s": (raw + daily) / max(t2 - t1, 1e-9)}


def backfill_cli(args: argparse.Namespace) -> int:
    loaded = load_field(args.field)
    settings = InfluxSettings.from_env(args.influx)
    bar = ProgressBar("aquavolt sim backfill", 0, enabled=getattr(args, "progress", True))
    try:
        with bar:
            out = backfill(loaded, settings, args.seed, parse_instant(args.end), args.days,
                           args.step_s, args.raw_days, bar=bar)
    except InfluxError as exc:
        print(f"aquavolt sim backfill: {exc}", file=sys.stderr)
        return 1
    print(f"aquavolt sim backfill: {out['series']} series, {out['points']} points and "
          f"{out['daily_points']} daily rollups in {out['model_s'] + out['write_s']:.1f} s "
          f"({out['points_per_s']:.0f} points/s) to {settings.url}/{settings.database}")
    return 0
