"""Glue between the Grafana foundation SDK and aquavolt: the provisioned datasource, raw
InfluxQL targets (the SDK has no InfluxDB query builder) and a grid that places panels.

The SDK's extension point for a datasource it does not model is a ``Dataquery`` variant:
any object with ``to_json()``. :class:`InfluxQL` is that, for InfluxDB's raw-query mode
(``rawQuery: true``), which Grafana's InfluxDB plugin sends as written after substituting
its macros (``$timeFilter``, ``$__interval``, ``$__from``/``$__to``, template variables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from aquavolt.dashboards.queries import Banded

DATASOURCE_UID = "aquavolt-influxdb"
"""The uid of the provisioned InfluxDB datasource; every panel and target points at it."""
DATASOURCE_TYPE = "influxdb"
DATASOURCE = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
GRID_COLUMNS = 24
DEFAULT_CONSOLE_URL = "https://127.0.0.1:8470/console/"
"""The operator console (rules/console) as docker-compose.yml publishes the operator API;
``aquavolt dashboards build|push --console-url`` (or ``AQUAVOLT_CONSOLE_URL``) says where it is."""


def console_link(base: str, asset: str) -> str:
    """The console's alarm list of one asset (``/console/?asset=ID``)."""
    return f"{base.rstrip('/')}/?asset={quote(asset, safe='')}"


class InfluxQL(cogvariants.Dataquery):
    """One raw InfluxQL target."""

    def __init__(self, ref_id: str, query: str, fmt: Literal["time_series", "table"] = "time_series",
                 alias: str = "") -> None:
        self.ref_id = ref_id
        self.query = query
        self.fmt = fmt
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": DATASOURCE.to_json(),
            "rawQuery": True,
            "query": self.query,
            "resultFormat": self.fmt,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


class Q(cogbuilder.Builder[InfluxQL]):
    """Builder form of :class:`InfluxQL`, for ``panel.with_target(Q(...))``."""

    def __init__(self, query: str, *, ref: str = "A", table: bool = False, alias: str = "") -> None:
        self._internal = InfluxQL(ref, query, "table" if table else "time_series", alias)

    def build(self) -> InfluxQL:
        return self._internal


def targets(*queries: str | Banded, table: bool = False, aliases: tuple[str, ...] = ()) -> list[Q]:
    """Targets with refIds A, B, C, ...; a banded query (one statement per band of range:
    raw, hourly, daily) gives ``A``, ``A-hourly``, ``A-daily``."""
    out = []
    for i, q in enumerate(queries):
        ref, alias = chr(ord("A") + i), aliases[i] if i < len(aliases) else ""
        if isinstance(q, Banded):
            out += [Q(stmt, ref=ref + sfx, table=table, alias=alias)
                    for stmt, sfx in zip(q, q.suffixes, strict=True)]
        else:
            out.append(Q(q, ref=ref, table=table, alias=alias))
    return out


@dataclass
class Grid:
    """Places panels left to right, wrapping at 24 columns; a row header spans the width."""

    x: int = 0
    y: int = 0
    row_h: int = 0
    next_id: int = 1
    panels: list[Any] = field(default_factory=list)
    console_url: str = DEFAULT_CONSOLE_URL
    assets: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Panel id -> the assets whose alarms the panel's links open in the console."""
    asset_columns: set[int] = field(default_factory=set)
    """Tables whose ``asset`` column links each row to that asset's alarms in the console."""

    def add(self, panel: Any, w: int, h: int, assets: tuple[str | None, ...] = (),
            asset_column: bool = False) -> Any:
        if not 0 < w <= GRID_COLUMNS:
            raise ValueError(f"panel width {w} outside 1..{GRID_COLUMNS}")
        if self.x + w > GRID_COLUMNS:
            self.newline()
        panel.grid_pos(dm.GridPos(h=h, w=w, x=self.x, y=self.y))
        panel.id(self.next_id)
        if hasattr(panel, "datasource"):
            panel.datasource(DATASOURCE)
        ids = tuple(dict.fromkeys(a for a in assets if a))
        if ids:
            self.assets[self.next_id] = ids
        if asset_column:
            self.asset_columns.add(self.next_id)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)
        return panel

    def place(self, panel: Any, x: int, y: int, w: int, h: int) -> Any:
        """Put a panel at an explicit position (beside a tall one); the flow continues below."""
        self.x, self.y, self.row_h = x, y, 0
        return self.add(panel, w, h)

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0

    def row(self, title: str) -> None:
        self.newline()
        r = gd.Row(title).grid_pos(dm.GridPos(h=1, w=GRID_COLUMNS, x=0, y=self.y)).id(self.next_id)
        self.next_id += 1
        self.panels.append(r)
        self.y += 1


EDITABLE = False
"""Dashboards are generated from the field and provisioned with ``allowUiUpdates: false``
(build.py): Grafana could not save an edit anyway, so the dashboards say they are read-only."""


def new_dashboard(uid: str, title: str, tags: list[str], time_from: str = "now-24h",
                  timezone: str = "browser") -> gd.Dashboard:
    """A dashboard shown in ``timezone`` (the field's: the utility's clock on every screen)."""
    board = (
        gd.Dashboard(title)
        .uid(uid)
        .tags(["aquavolt", *tags])
        .refresh("30s")
        .time(time_from, "now")
        .timezone(timezone)
    )
    return board.editable() if EDITABLE else board.readonly()


def finish(board: gd.Dashboard, grid: Grid) -> dict[str, Any]:
    """Attach the grid's panels and return the dashboard as Grafana JSON (a dict)."""
    for p in grid.panels:
        if isinstance(p, gd.Row):
            board.with_row(p)
        else:
            board.with_panel(p)
    out: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    for p in out.get("panels", []):
        for panel in [p, *(p.get("panels") or [])]:
            _console_links(panel, grid)
    return out


def _console_links(panel: dict[str, Any], grid: Grid) -> None:
    """Links to the operator console: a panel of an asset to its alarms, a table's ``asset``
    column to each row's asset."""
    for asset in grid.assets.get(panel.get("id", 0), ()):
        panel.setdefault("links", []).append(
            {"title": f"Alarms of {asset} in the console", "url": console_link(grid.console_url, asset),
             "targetBlank": True})
    if panel.get("id") in grid.asset_columns:
        url = f"{grid.console_url.rstrip('/')}/?asset=${{__value.raw:percentencode}}"
        link = {"title": "Alarms of ${__value.raw} in the console", "url": url, "targetBlank": True}
        overrides = panel.setdefault("fieldConfig", {"defaults": {}}).setdefault("overrides", [])
        overrides.append({"matcher": {"id": "byName", "options": "asset"},
                          "properties": [{"id": "links", "value": [link]}]})


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    """Absolute thresholds: ``(None, 'green'), (207, 'red')`` ..."""
    return gd.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps]
    )
