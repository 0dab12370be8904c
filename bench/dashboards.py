"""Dashboards over a year: how long every panel query takes on 13 months of the demo town.

A real InfluxDB (``aquavolt.harness.servers.InfluxDB``) gets 13 months of the demo town's data
as a deployment holds them after a year (docs/influxdb-schema.md):

- raw ``telemetry`` (``autogen`` keeps it for ever) for every device point a panel reads: the
  network devices (pumps, tank, zone meters and pressure sensors, substation, feeders,
  transformers) every ``--raw-step-s`` (default 30 min), the customers' totalisers every hour
  for the first ``--customers`` customers (default 6; the board shows one at a time);
- the hourly and daily rollups (``rp_1h.telemetry_1h``, ``rp_1d.telemetry_1d``: mean, min,
  max, sum, count, last of each series, as the collector's ``SELECT ... INTO`` makes them),
  computed here from the same values; the 1-minute rollup is not written (no panel reads it);
- gateway health every 15 minutes, device health every 3 hours for the devices above, gateway
  births, about 24 alarms a day (raised, acknowledged, cleared; in the journals' retention policy
  ``rp_events``, as the collector writes them), daily night flow, water
  balance and reliability, an outage every few days, the asset positions.

Real polls are faster (1 to 60 s) and a year holds every customer: the raw volume here is
bounded so that the run ends in about two minutes; raw queries on a real year are slower
than measured here, never faster.

Then every query of every panel of every dashboard (``dashboards/``), with Grafana's macros and
the template variables expanded as Grafana does (``dashboards/macros.py``: ``$timeFilter``,
``$__interval``, ``${__from}``/``${__to}``, the customer variable at its default value, panel
time shifts), runs at the dashboard's default range and over the last 12 months, ending at
the last instant written: one warm-up then ``--repeat`` timed runs each.

A query *reads raw data over more than a day* when it selects from a measurement written at
the poll or report rate (raw ``telemetry``, which has rollups; ``gateway_health`` and
``device_health``, which have none), its range conditions hold, the range is longer than a
day and the query is not bounded to the range's last day.

    .venv/bin/python bench/dashboards.py [--repeat 3] [--raw-step-s 900] [--customers 24]

Last line: one JSON object with panel_query_p99_ms, raw_queries_over_a_day, the goals and
figures per dashboard.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # this file is bench/dashboards.py: keep it from shadowing the dashboards package

import numpy as np

from aquavolt import schema
from aquavolt.config import LoadedField, load_field
from aquavolt.dashboards.assets import location_lines
from aquavolt.dashboards.build import build_all
from aquavolt.dashboards.macros import TimeRange, dashboard_queries, guards_hold, variable_values
from aquavolt.harness.servers import InfluxDB
from aquavolt.influx import Influx

ROOT = Path(__file__).resolve().parents[1]
FIELD = ROOT / "examples" / "demo-town.yaml"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
END_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z: "now" for every range
START_MS = END_MS - 396 * DAY_MS  # 13 months
YEAR_MS = 365 * DAY_MS
GOAL_P99_MS = 100.0
RAW_MEASUREMENTS = ("telemetry", "gateway_health", "device_health")
"""Measurements written at the poll or report rate (every few seconds to a minute per series);
``telemetry`` has rollups, the health reports none."""
_RAW_FROM = re.compile(r'FROM\s+(?:"autogen"\.)?"(' + "|".join(RAW_MEASUREMENTS) + r')"(?![_\w])')
_BOUND = re.compile(r"time >= (\d+)ms - (\d+)([smhd])\b")
_RANGE = {"now-24h": DAY_MS, "now-7d": 7 * DAY_MS, "now-30d": 30 * DAY_MS, "now-12M": YEAR_MS}


# ---------------------------------------------------------------- data


def _typical(point: str) -> float:
    for key, v in (("voltage", 231.0), ("current", 40.0), ("power", 800.0), ("flow", 18.0),
                   ("pressure", 3.2), ("level", 3.5), ("temperature", 45.0), ("load_kva", 4200.0),
                   ("apparent", 250_000.0), ("energy", 1000.0), ("volume", 100.0)):
        if key in point:
            return v
    return 10.0


def _series_values(point: str, kind: str, n: int, step_s: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "counter":  # a totaliser: grows by a daily pattern
        hours = (np.arange(n) * step_s / 3600) % 24
        use = 0.02 * (1 + np.sin((hours - 6) / 24 * 2 * np.pi)) * step_s / 3600 + rng.random(n) * 1e-3
        return _typical(point) + np.cumsum(use)
    if kind == "discrete":
        return (np.sin(np.arange(n) * step_s / 7200) > 0).astype(float)
    daily = np.sin(np.arange(n) * step_s / 86400 * 2 * np.pi)
    return _typical(point) * (1 + 0.05 * daily + 0.01 * rng.standard_normal(n))


def _read_points(boards: dict[str, dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for board in boards.values():
        for _p, t in dashboard_queries(board):
            out |= set(re.findall(r"\"point\" = '(\w+)'", t["query"]))
    return out


def telemetry(lf: LoadedField, boards: dict[str, dict[str, Any]], raw_step_s: int,
              customers: int) -> Iterator[tuple[str, list[str]]]:
    """(retention policy, lines) batches: raw, hourly and daily rollups of each series."""
    rng = np.random.default_rng(19)
    wanted = _read_points(boards)
    meters = {m for c in lf.field.customers[:customers] for m in (c.water_meter, c.electricity_meter) if m}
    for dev_id, (gw, _dev) in lf.field.devices.items():
        metered = dev_id.startswith(("wm-", "em-"))
        if metered and dev_id not in meters:
            continue
        step_s = 3600 if metered else raw_step_s
        per_hour = 3600 // step_s
        n = (END_MS - START_MS) // 1000 // step_s
        ts = START_MS + np.arange(n, dtype=np.int64) * step_s * 1000
        for p in lf.profile_of(dev_id).points:
            if p.name not in wanted:
                continue
            tags = f"gateway={gw.id},device={dev_id},point={p.name}"
            v = _series_values(p.name, p.kind, n, step_s, rng)
            yield "autogen", [f"telemetry,{tags} value={x:.5g},quality=192i {t}"
                              for t, x in zip(ts.tolist(), v.tolist(), strict=True)]
            h = v.reshape(-1, per_hour)
            hts = ts[::per_hour]
            hourly = (h.mean(1), h.min(1), h.max(1), h.sum(1), np.full(len(h), per_hour), h[:, -1])
            yield "rp_1h", [f"telemetry_1h,{tags} mean={a:.5g},min={b:.5g},max={c:.5g},sum={d:.6g},"
                            f"count={int(e)}i,last={f:.5g} {t}"
                            for t, a, b, c, d, e, f in zip(hts.tolist(), *(x.tolist() for x in hourly),
                                                           strict=True)]
            d = v.reshape(-1, per_hour * 24)
            dts = ts[:: per_hour * 24]
            daily = (d.mean(1), d.min(1), d.max(1), d.sum(1), np.full(len(d), per_hour * 24), d[:, -1])
            yield "rp_1d", [f"telemetry_1d,{tags} mean={a:.5g},min={b:.5g},max={c:.5g},sum={e:.6g},"
                            f"count={int(g)}i,last={f:.5g} {t}"
                            for t, a, b, c, e, g, f in zip(dts.tolist(), *(x.tolist() for x in daily),
                                                           strict=True)]


def events(lf: LoadedField, customers: int) -> Iterator[tuple[str, list[str]]]:
    f = lf.field
    rng = np.random.default_rng(17)
    out: list[str] = []
    for t in range(START_MS, END_MS, 900_000):
        up = (t - START_MS) // 1000 % (30 * 86400)
        for gw in f.gateways:
            out.append(f"gateway_health,gateway={gw.id} uptime_s={up}.0,readings_per_s=120.5,devices="
                       f"{len(gw.devices)}i,buffer_depth={int(t // 900_000 % 7)}i,buffer_dropped=0i {t}")
        if len(out) > 50_000:
            yield "autogen", out
            out = []
    meters = {m for c in f.customers[:customers] for m in (c.water_meter, c.electricity_meter) if m}
    devices = [(gw.id, d.id) for gw in f.gateways for d in gw.devices
               if not d.id.startswith(("wm-", "em-")) or d.id in meters]
    for t in range(START_MS, END_MS, 3 * HOUR_MS):
        k = (t - START_MS) // HOUR_MS
        for gw_id, dev in devices:
            out.append(f"device_health,gateway={gw_id},device={dev} state=\"online\",online=1i,"
                       f"polls={k * 60}i,errors={k // 50}i,poll_latency_ms={30 + k % 17}.0 {t}")
        if len(out) > 50_000:
            yield "autogen", out
            out = []
    for t in range(START_MS, END_MS, 30 * DAY_MS):
        for n, gw in enumerate(f.gateways):
            out.append(f"gateway_status,gateway={gw.id} state=\"online\",online=1i,bd_seq={n}i {t + n}")
            # a gap a gateway could no longer fill, about monthly (data_loss: an event series)
            out.append(f"data_loss,gateway={gw.id} messages={n + 1}i,first_seq={t // 60_000}i,"
                       f"last_seq={t // 60_000 + n}i {t + 3 * HOUR_MS}")
    assets = [(a, c) for a, c in (("tank-1", "level_high"), ("zone-a", "night_flow"), ("pump-1", "trip"),
                                  ("feeder-3", "outage"), ("tx-2a", "outage"), ("ss1", "oil_temperature"),
                                  ("pressure-zone-b", "pressure_low"), ("c0001", "over_consumption"))]
    prios = ("low", "low", "low", "medium", "high", "critical")
    yield "autogen", out
    out = []  # the alarm journal, where the collector writes it
    for t in np.sort(rng.integers(START_MS, END_MS, 396 * 24)).tolist():
        asset, cond = assets[int(rng.integers(len(assets)))]
        prio = prios[int(rng.integers(len(prios)))]
        tags = f"alarm_event,asset={asset},condition={cond},priority={prio}"
        for dt, state, tr, act in ((0, "unack", "raised", 1), (300_000, "acked", "acknowledged", 1),
                                   (900_000, "normal", "cleared", 0)):
            out.append(f'{tags} alarm_id="{asset}/{cond}",state="{state}",transition="{tr}",active={act}i,'
                       f'message="{asset} {cond}",by="",comment="",value=1.0 {t + dt}')
    yield schema.RP_EVENTS, out
    out = []
    for day in range(START_MS, END_MS, DAY_MS):
        for z in f.water.zones:
            out.append(f"night_flow,zone={z.id} mnf_m3h=4.2,nnf_m3h=3.1,rise_m3h=0.4 {day + 3 * HOUR_MS}")
            out.append(f"water_balance,zone={z.id} input_m3=900.0,consumption_m3=720.0,losses_m3=180.0 {day}")
        for s in f.electricity.substations:
            for k, fd in enumerate(s.feeders):
                out.append(f"reliability,feeder={fd.id} saidi_min={25.0 * k},saifi={1.0 * k},maifi=0.5,"
                           f"customers_served=80i,sustained={k}i,momentary=1i {day}")
                if (day // DAY_MS + k) % 4 == 0:
                    out.append(f'outage,feeder={fd.id} duration_s=1500.0,customers=80i,'
                               f'classification="sustained",started_ms={day + 36_000_000}i,kind="feeder" '
                               f"{day + 37_500_000}")
    out.extend(location_lines(f, START_MS))
    yield "autogen", out


def _write_all(url: str, batches: Iterator[tuple[str, list[str]]], writers: int = 2) -> int:
    q: Queue[tuple[str, bytes] | None] = Queue(maxsize=writers * 2)
    errors: list[str] = []

    def work() -> None:
        while (item := q.get()) is not None:
            rp, body = item
            params = urllib.parse.urlencode({"db": schema.DATABASE, "rp": rp, "precision": "ms"})
            req = urllib.request.Request(f"{url}/write?{params}", data=body, method="POST",
                                         headers={"Content-Encoding": "gzip"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
            except OSError as exc:  # pragma: no cover - reported below
                errors.append(str(exc))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(writers)]
    for t in threads:
        t.start()
    n = 0
    for rp, lines in batches:
        for k in range(0, len(lines), 20_000):
            chunk = lines[k: k + 20_000]
            n += len(chunk)
            q.put((rp, gzip.compress("\n".join(chunk).encode(), compresslevel=1)))
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"writes failed: {errors[:3]}")
    return n


# ---------------------------------------------------------------- queries


def reads_raw_over_a_day(query: str, range_ms: int) -> str:
    """The raw measurement the substituted query reads over more than a day, or "": it reads
    one (telemetry, health reports), its guards (comparisons of literals) all hold, the range
    is longer than a day and no ``time >= END - D`` bounds it to a day."""
    m = _RAW_FROM.search(query)
    if range_ms <= DAY_MS or m is None:
        return ""
    if not guards_hold(query):
        return ""
    unit_ms = {"s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS}
    if any(int(n) * unit_ms[u] <= DAY_MS for _end, n, u in _BOUND.findall(query)):
        return ""
    return m.group(1)


def time_queries(ix: Influx, boards: dict[str, dict[str, Any]], repeat: int) -> dict[str, Any]:
    per_board: dict[str, Any] = {}
    every: list[float] = []
    raw_total = 0
    raw_by: dict[str, int] = {}
    slowest: list[tuple[float, str]] = []
    for name, board in boards.items():
        default = board.get("time", {}).get("from", "now-24h")
        times: list[float] = []
        raw_over = 0
        figures: dict[str, Any] = {}
        for label, rng_name in (("default", default), ("last_12_months", "now-12M")):
            span = _RANGE[rng_name]
            rng = TimeRange(END_MS - span, END_MS, variable_values(board))
            these: list[float] = []
            for panel, target in dashboard_queries(board):
                query = rng.for_panel(panel).substitute(target["query"])
                raw = reads_raw_over_a_day(query, span)
                if raw:
                    raw_over += 1
                    raw_by[raw] = raw_by.get(raw, 0) + 1
                ix.query(query)  # warm-up
                runs = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    ix.query(query)
                    runs.append((time.perf_counter() - t0) * 1000)
                these += runs
                slowest.append((max(runs), f"{name} / {rng_name} / {panel.get('title')} / {target['refId']}"))
            figures[label] = {"range": rng_name, "queries": len(these) // repeat,
                              "p50_ms": round(statistics.median(these), 1),
                              "max_ms": round(max(these), 1)}
            times += these
        every += times
        raw_total += raw_over
        figures["p99_ms"] = round(float(np.percentile(times, 99)), 1)
        figures["raw_queries_over_a_day"] = raw_over
        per_board[name] = figures
    slowest.sort(reverse=True)
    return {"panel_query_p99_ms": round(float(np.percentile(every, 99)), 1),
            "panel_query_p50_ms": round(statistics.median(every), 1),
            "panel_query_max_ms": round(max(every), 1),
            "panel_queries_timed": len(every),
            "raw_queries_over_a_day": raw_total,
            "raw_queries_over_a_day_by_measurement": raw_by,
            "slowest": [f"{ms:.0f} ms {what}" for ms, what in slowest[:5]],
            "dashboards": per_board}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per query (default: %(default)s)")
    ap.add_argument("--raw-step-s", type=int, default=1800, choices=(60, 300, 600, 900, 1800, 3600),
                    help="raw step of the network devices (default: %(default)s)")
    ap.add_argument("--customers", type=int, default=6,
                    help="customers with meter history (default: %(default)s)")
    args = ap.parse_args(argv)
    lf = load_field(FIELD)
    boards = build_all(lf)
    with tempfile.TemporaryDirectory(prefix="aquavolt-bench-dash-") as tmp:
        server = InfluxDB(Path(tmp))
        server.start(timeout_s=60)
        try:
            ix = Influx(server.settings().model_copy(update={"timeout_s": 300.0}))
            ix.execute(schema.continuous_queries())
            ix.execute([f'DROP CONTINUOUS QUERY "cq_{m}" ON "{schema.DATABASE}"'
                        for *_r, m in schema.ROLLUPS])
            t0 = time.perf_counter()
            points = _write_all(server.url, telemetry(lf, boards, args.raw_step_s, args.customers))
            points += _write_all(server.url, events(lf, args.customers))
            write_s = time.perf_counter() - t0
            print(f"wrote {points:,} points (13 months) in {write_s:.1f} s", file=sys.stderr)
            t0 = time.perf_counter()
            result = time_queries(ix, boards, args.repeat)
            query_s = time.perf_counter() - t0
        finally:
            server.stop()
    for name, fig in result["dashboards"].items():
        print(f"{name:12} p99 {fig['p99_ms']:8.1f} ms  raw>1d {fig['raw_queries_over_a_day']:3}  "
              f"default {fig['default']}  12 months {fig['last_12_months']}", file=sys.stderr)
    out = {**result, "points_written": points, "write_s": round(write_s, 1), "query_s": round(query_s, 1),
           "raw_step_s": args.raw_step_s, "customers_with_history": args.customers, "repeat": args.repeat,
           "goal_panel_query_p99_ms": GOAL_P99_MS, "goal_raw_queries_over_a_day": 0,
           "goal_met": result["panel_query_p99_ms"] < GOAL_P99_MS and result["raw_queries_over_a_day"] == 0}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
