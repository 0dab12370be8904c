"""The six dashboards, generated from the field: a new zone, pump, tank, feeder or
transformer in the field file gets its panels without anyone drawing them.

Each function takes the loaded field and returns Grafana dashboard JSON (a dict).
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from aquavolt import schema
from aquavolt.config import LoadedField
from aquavolt.dashboards import queries as q
from aquavolt.dashboards.assets import customers_of, field_assets
from aquavolt.dashboards.grafana import DEFAULT_CONSOLE_URL, Grid, finish, new_dashboard
from aquavolt.dashboards.panels import asset_map, figure, grid, pie, series, timeline

VOLTAGES = ["voltage_l1_v", "voltage_l2_v", "voltage_l3_v"]
CURRENTS = ["current_l1_a", "current_l2_a", "current_l3_a"]
POWERS = ["active_power_kw", "reactive_power_kvar"]
LAST_DAY_NOTE = ("Health reports are kept raw (no rollup): the panel shows the last day of the range "
                 "at most")
UIDS = {
    "overview": "aquavolt-overview",
    "water": "aquavolt-water",
    "electricity": "aquavolt-electricity",
    "alarms": "aquavolt-alarms",
    "gateways": "aquavolt-gateways",
    "customer": "aquavolt-customer",
}


def _devices_with(lf: LoadedField, profile: str) -> list[str]:
    return [d.id for _g, d in lf.field.devices.values() if d.profile == profile]


def overview(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    board = new_dashboard(UIDS["overview"], f"{f.name or f.id}: overview", ["overview"], timezone=f.timezone)
    g = Grid(console_url=console_url)
    located = [a for a in field_assets(f) if a.latitude_deg is not None]
    lat = fmean(a.latitude_deg for a in located if a.latitude_deg is not None) if located else 0.0
    lon = fmean(a.longitude_deg for a in located if a.longitude_deg is not None) if located else 0.0
    location_q = (f'SELECT last("latitude_deg") AS "latitude_deg", last("longitude_deg") AS "longitude_deg", '
                  f'last("name") AS "name" FROM "{schema.RP_EVENTS}"."{schema.ASSET_LOCATION}" '
                  f'GROUP BY "asset", "kind"')
    g.add(asset_map("Network map: assets by alarm state", location_q, q.active_per_asset(), lat, lon), 16, 18)
    g.add(figure("Active alarms by priority", [q.active_by_priority()], no_value="0",
                 bands=[(None, "green"), (1, "red")], aliases=("$tag_priority",)), 8, 9)
    g.place(figure(f"Gateways online (of {len(f.gateways)})", [q.gateways_online()], no_value="0",
                   bands=[(None, "red"), (len(f.gateways), "green")]), 16, 9, 8, 9)
    g.x, g.y, g.row_h = 0, 18, 0
    g.add(timeline("Gateways", [q.gateway_states()]), 12, 6)
    g.add(grid("Active alarms", [q.active_alarms()]), 12, 6, asset_column=True)
    return finish(board, g)


def water(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    board = new_dashboard(UIDS["water"], f"{f.name or f.id}: water", ["water"], "now-7d", timezone=f.timezone)
    g = Grid(console_url=console_url)
    for z in f.water.zones:
        g.row(f"{z.name or z.id} ({z.id})")
        g.add(series(f"{z.id} inflow", [q.point_mean(z.inlet_meters, "flow_lps")], unit="lps",
                     description=f"Inlet meters {', '.join(z.inlet_meters)}"), 12, 8,
              assets=(z.id, *z.inlet_meters))
        g.add(series(f"{z.id} minimum night flow and leak estimate", [q.night_flow(z.id, f.timezone)],
                     unit="m3/h",
                     description="Each night's minimum 1-hour inflow, the net night flow after "
                                 "legitimate night use, and the estimated leak (rise of the net night "
                                 "flow over the 7-night 20th-percentile baseline)", bars=True), 12, 8,
              assets=(z.id,))
        if z.pressure_sensors:
            g.add(series(f"{z.id} pressure", [q.point_mean(z.pressure_sensors, "pressure_bar")],
                         unit="pressurebar"), 12, 7, assets=(z.id, *z.pressure_sensors))
        if z.outlet_meters:
            g.add(series(f"{z.id} outflow", [q.point_mean(z.outlet_meters, "flow_lps")], unit="lps"), 12, 7,
                  assets=(z.id, *z.outlet_meters))
    if f.water.zones:
        g.row("Water balance")
        g.add(series("Daily water balance per zone",
                     [q.water_balance((z.id for z in f.water.zones), f.timezone)],
                     unit="m3", bars=True,
                     description="System input, billed consumption and losses per zone per day (IWA)"), 24, 8)
    if f.water.pumps:
        g.row("Pumps")
        for p in f.water.pumps:
            g.add(series(f"{p.name or p.id} ({p.id})", [q.points_of(p.device, ["flow_lps", "running"])],
                         description=f"Rated {p.rated_flow_lps} L/s"), 8, 7, assets=(p.id, p.device))
            g.add(series(f"{p.id} motor current", [q.point_mean([p.device], "motor_current_a")], unit="amp",
                         bands=[(None, "green"), (p.rated_current_a * 1.15, "red")]), 8, 7,
                  assets=(p.id, p.device))
            g.add(series(f"{p.id} discharge pressure", [q.point_mean([p.device], "discharge_pressure_bar")],
                         unit="pressurebar"), 8, 7, assets=(p.id, p.device))
    if f.water.tanks:
        g.row("Tanks")
        for t in f.water.tanks:
            g.add(series(f"{t.name or t.id} ({t.id}) level", [q.point_mean([t.device], "level_m")],
                         unit="lengthm",
                         bands=[(None, "red"), (t.low_level_m, "green"), (t.high_level_m, "red")]), 12, 7,
                  assets=(t.id, t.device))
    return finish(board, g)


def electricity(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    e = f.electricity
    nominal = e.nominal_voltage_v
    band = [(None, "red"), (round(nominal * 0.9, 1), "green"), (round(nominal * 1.1, 1), "red")]
    impact = customers_of(f)
    board = new_dashboard(UIDS["electricity"], f"{f.name or f.id}: electricity", ["electricity"],
                          timezone=f.timezone)
    g = Grid(console_url=console_url)
    for s in e.substations:
        g.row(f"{s.name or s.id} ({s.id})")
        if s.device:
            g.add(series(f"{s.id} transformer load", [q.point_mean([s.device], "load_kva")], unit="kVA",
                         bands=[(None, "green"), (s.rating_kva, "red")]), 12, 7, assets=(s.id, s.device))
            g.add(series(f"{s.id} temperatures", [q.points_of(s.device, ["oil_temperature_c",
                                                                          "winding_temperature_c"])],
                         unit="celsius"), 12, 7, assets=(s.id, s.device))
        for fd in s.feeders:
            if fd.device:
                on = (fd.id, fd.device)
                g.add(series(f"{fd.id} currents", [q.points_of(fd.device, CURRENTS)], unit="amp"), 8, 7,
                      assets=on)
                g.add(series(f"{fd.id} power", [q.points_of(fd.device, POWERS)],
                             unit="kwatt"), 8, 7, assets=on)
                g.add(series(f"{fd.id} voltages", [q.points_of(fd.device, VOLTAGES)], unit="volt"), 8, 7,
                      assets=on)
        txs = [t for fd in s.feeders for t in fd.transformers if t.device]
        if txs:
            g.row(f"{s.id} distribution transformers (EN 50160: {band[1][0]}-{band[2][0]} V)")
        for t in txs:
            dev = t.device or ""
            g.add(series(f"{t.id} LV voltages", [q.points_of(dev, VOLTAGES)],
                         unit="volt", bands=band,
                         description=f"EN 50160: 95 % of 10-min means within {nominal:g} V +/-10 %"), 8, 7,
                  assets=(t.id, dev))
            g.add(series(f"{t.id} currents", [q.points_of(dev, CURRENTS)],
                         unit="amp"), 8, 7, assets=(t.id, dev))
            g.add(series(f"{t.id} load (% of {t.rating_kva:g} kVA)",
                         [q.point_mean([dev], "total_apparent_power_va", scale=f" / {t.rating_kva * 10:g}")],
                         unit="percent", bands=[(None, "green"), (80, "orange"), (100, "red")]), 8, 7,
                  assets=(t.id, dev))
        assets = [fd.id for fd in s.feeders] + [t.id for fd in s.feeders for t in fd.transformers]
        g.row(f"{s.id} outages")
        g.add(grid(f"{s.id} outages, with the customers each asset supplies", [q.outages(assets)],
                   asset_text={a: f"{a}: {len(impact.get(a, []))} customers" for a in assets}), 24, 7,
              asset_column=True)
        feeders = [fd.id for fd in s.feeders]
        g.add(grid(f"{s.id} outages restored: duration, customers, classification",
                   [q.outage_history(feeders)], states=False,
                   description="One row per restoration (IEEE 1366: sustained from 5 minutes)"), 12, 8)
        g.add(series(f"{s.id} reliability per feeder and day (SAIDI min, SAIFI, MAIFI)",
                     [q.reliability(feeders)], bars=True,
                     description="IEEE 1366, per local day: SAIDI = customer-minutes of sustained "
                                 "interruptions / customers served; SAIFI = customers interrupted "
                                 "(sustained) / customers served; MAIFI = momentary interruptions x "
                                 "customers / customers served"), 12, 8)
    return finish(board, g)


def alarms(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    board = new_dashboard(UIDS["alarms"], f"{f.name or f.id}: alarms", ["alarms"], timezone=f.timezone)
    g = Grid(console_url=console_url)
    g.add(grid("Active alarms", [q.active_alarms()],
               description="Latest state active or unacknowledged"), 24, 9, asset_column=True)
    g.add(series("Alarms raised per hour", [q.raised_per("1h")], bars=True,
                 description="EEMUA 191: about 6/h acceptable, 12/h the most manageable; over long "
                             "ranges each bar is the worst hour of its interval",
                 bands=[(None, "green"), (6, "orange"), (12, "red")]).interval("1h"), 12, 7)
    g.add(series("Alarms raised per 10 minutes (flood: more than 10)", [q.raised_per("10m")], bars=True,
                 description="Over long ranges each bar is the worst 10 minutes of its interval",
                 bands=[(None, "green"), (10, "red")]).interval("10m"), 12, 7)
    g.add(pie("Priority mix (target 80 % low, 15 % medium, 5 % high)", [q.priority_mix()]), 8, 7)
    g.add(figure("Chattering: most raises of one alarm in a minute", [q.chattering()],
                 bands=[(None, "green"), (3, "red")], no_value="0"), 8, 7)
    g.add(figure("Stale alarms (active > 24 h; target < 5)", [q.stale_alarms()],
                 bands=[(None, "green"), (5, "red")], no_value="0"), 8, 7)
    g.add(grid("History", [q.alarm_history()]), 24, 10, asset_column=True)
    return finish(board, g)


def gateways(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    board = new_dashboard(UIDS["gateways"], f"{f.name or f.id}: gateways", ["gateways"], timezone=f.timezone)
    g = Grid(console_url=console_url)
    names = ", ".join(gw.id for gw in f.gateways)
    g.add(timeline("Gateway online state", [q.gateway_states()], description=f"Gateways: {names}"), 24, 6)
    g.add(series("Poll errors per interval", [q.poll_errors()], bars=True, description=LAST_DAY_NOTE), 12, 7)
    g.add(series("Poll latency", [q.poll_latency()], unit="ms", description=LAST_DAY_NOTE), 12, 7)
    g.add(series("Buffer depth (messages waiting for the broker)", [q.gateway_health("buffer_depth")],
                 description=LAST_DAY_NOTE), 12, 7)
    g.add(series("Buffer drops (since start)", [q.gateway_health("buffer_dropped")],
                 bands=[(None, "green"), (1, "red")], description=LAST_DAY_NOTE), 12, 7)
    g.add(series("Readings per second", [q.gateway_health("readings_per_s", "mean")],
                 description=LAST_DAY_NOTE), 18, 6)
    g.add(figure("Data lost for good", [q.data_lost()], no_value="0", bands=[(None, "green"), (1, "red")],
                 aliases=("$tag_gateway",),
                 description="Data messages per gateway that its store could no longer send again "
                             "when the collector asked for a gap (dropped under its bounds), over the "
                             "range; none is 0. Each gap is logged by the collector with its seqs "
                             "(measurement data_loss)."), 6, 6)
    for gw in f.gateways:
        devs = ", ".join(d.id for d in gw.devices[:12]) + (" ..." if len(gw.devices) > 12 else "")
        g.add(figure(f"{gw.id}: devices answering (of {len(gw.devices)})", [q.devices_online(gw.id)],
                     no_value="0", bands=[(None, "red"), (len(gw.devices), "green")],
                     description=f"{gw.name}: {len(gw.devices)} devices ({devs}), in the last day "
                                 "of the range"), 6, 4)
    return finish(board, g)
