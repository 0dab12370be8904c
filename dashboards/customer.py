"""The customer dashboard: one customer's daily consumption against the same period last
year (364 days earlier, weekdays aligned), water and electricity. A variable picks the
customer; its value is the regex of the customer's meter ids, so one query serves both."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.models import dashboard as dm

from aquavolt.config import LoadedField
from aquavolt.dashboards import queries as q
from aquavolt.dashboards.grafana import DEFAULT_CONSOLE_URL, Grid, finish, new_dashboard
from aquavolt.dashboards.panels import figure, series

UID = "aquavolt-customer"
LAST_YEAR = "364d"


def customer_options(lf: LoadedField) -> list[dm.VariableOption]:
    out = []
    for c in lf.field.customers:
        meters = [m for m in (c.water_meter, c.electricity_meter) if m]
        if meters:
            label = f"{c.name} ({c.id})" if c.name else c.id
            out.append(dm.VariableOption(text=label, value="|".join(meters)))
    return out


def customer(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, Any]:
    f = lf.field
    board = new_dashboard(UID, f"{f.name or f.id}: customer", ["customer"], "now-30d", timezone=f.timezone)
    opts = customer_options(lf)
    if opts:
        opts[0].selected = True
        var = (
            gd.CustomVariable("customer").label("Customer")
            .values(", ".join(f"{o.text.replace(',', ' ')} : {o.value}" for o in opts))
            .options(opts)
            .current(dm.VariableOption(selected=True, text=opts[0].text, value=opts[0].value))
        )
        board.with_variable(var)
    g = Grid(console_url=console_url)
    for kind, point, unit in (("Water", "volume_m3", "m3"), ("Electricity", "energy_kwh", "kwatth")):
        g.row(f"{kind}: ${{customer:text}}")  # the customer's name and id, not the meter regex
        g.add(series(f"{kind}: daily consumption, this period", [q.consumption(point, tz=f.timezone)],
                     unit=unit, bars=True), 9, 8)
        last = series(f"{kind}: daily consumption, same period last year",
                      [q.consumption(point, tz=f.timezone, last_year=True)],
                      unit=unit, bars=True, description="364 days earlier, so weekdays line up")
        last.time_shift(LAST_YEAR)
        g.add(last, 9, 8)
        g.add(figure(f"{kind}: total, this period vs last year",
                     [q.consumption_total(point, tz=f.timezone),
                      q.consumption_total(point, LAST_YEAR, f.timezone)], unit=unit,
                     aliases=("this period", "same period last year")), 6, 8)
    return finish(board, g)
