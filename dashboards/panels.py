"""Panel shorthands on top of the foundation SDK builders, so that dashboard modules read as
a list of panels: ``series("Zone A inflow", [query], unit="lps")``."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import geomap, piechart, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from aquavolt.dashboards.grafana import targets, thresholds
from aquavolt.dashboards.queries import Banded

STATE_COLOURS = {"unack": "red", "acked": "orange", "rtn_unack": "yellow", "normal": "green",
                 "shelved": "blue", "suppressed": "purple", "out_of_service": "gray",
                 "online": "green", "offline": "red"}


def state_mappings() -> list[dm.ValueMapping]:
    opts = {k: dm.ValueMappingResult(color=c, text=k) for k, c in STATE_COLOURS.items()}
    opts |= {"1": dm.ValueMappingResult(color="green", text="online"),  # numeric online flags
             "0": dm.ValueMappingResult(color="red", text="offline")}
    return [dm.ValueMap(options=opts)]


def series(title: str, queries: list[str | Banded], unit: str = "", description: str = "",
           bands: list[tuple[float | None, str]] | None = None, bars: bool = False,
           aliases: tuple[str, ...] = ()) -> timeseries.Panel:
    p = timeseries.Panel().title(title).targets(list(targets(*queries, aliases=aliases)))
    if unit:
        p.unit(unit)
    if description:
        p.description(description)
    if bands:
        p.thresholds(thresholds(*bands)).thresholds_style(
            gc.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE_AND_AREA)
        )
    if bars:
        p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
    return p


def figure(title: str, queries: list[str | Banded], unit: str = "", description: str = "",
           bands: list[tuple[float | None, str]] | None = None, no_value: str = "",
           aliases: tuple[str, ...] = ()) -> stat.Panel:
    p = stat.Panel().title(title).targets(list(targets(*queries, aliases=aliases)))
    if unit:
        p.unit(unit)
    if description:
        p.description(description)
    if bands:
        p.thresholds(thresholds(*bands))
    if no_value:
        p.no_value(no_value)
    return p


def grid(title: str, queries: list[str | Banded], description: str = "", states: bool = True,
         asset_text: dict[str, str] | None = None) -> table.Panel:
    """A table; ``asset_text`` maps asset ids to the text shown for them (value mappings)."""
    p = table.Panel().title(title).targets(list(targets(*queries, table=True)))
    if description:
        p.description(description)
    if states:
        p.mappings(state_mappings())
    if asset_text:
        mapping = dm.ValueMap(options={k: dm.ValueMappingResult(text=v) for k, v in asset_text.items()})
        p.override_by_name("asset", [dm.DynamicConfigValue(id_val="mappings", value=[mapping])])
    return p


def timeline(title: str, queries: list[str | Banded], description: str = "") -> statetimeline.Panel:
    p = statetimeline.Panel().title(title).targets(list(targets(*queries))).mappings(state_mappings())
    if description:
        p.description(description)
    return p


def pie(title: str, queries: list[str | Banded]) -> piechart.Panel:
    return piechart.Panel().title(title).targets(list(targets(*queries)))


def asset_map(title: str, location_query: str, alarm_query: str, lat: float, lon: float) -> Any:
    """Markers at each asset, joined with its count of active alarms (0/none green, else red)."""
    markers = (
        gc.MapLayerOptions().type("markers").name("assets").tooltip(True)
        .config({
            "style": {
                "color": {"field": "active_alarms", "fixed": "green"},
                "size": {"fixed": 6},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
            },
            "showLegend": True,
        })
        .location(gc.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS)
                  .latitude("latitude_deg").longitude("longitude_deg"))
    )
    return (
        geomap.Panel().title(title)
        .targets(list(targets(location_query, alarm_query, table=True)))
        .with_transformation(dm.DataTransformerConfig(
            id_val="joinByField", options={"byField": "asset", "mode": "outer"}))
        .view(geomap.MapViewConfig().id("coords").lat(lat).lon(lon).zoom(13))  # type: ignore[arg-type]
        .basemap(gc.MapLayerOptions().type("osm-standard").name("OpenStreetMap"))
        .layers([markers])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .thresholds(thresholds((None, "green"), (1, "red")))
    )
