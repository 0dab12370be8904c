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

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_UID = "aquavolt-influxdb"
"""The uid of the provisioned InfluxDB datasource; every panel and target points at it."""
DATASOURCE_TYPE = "influxdb"
DATASOURCE = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
GRID_COLUMNS = 24


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


def targets(*queries: str, table: bool = False, aliases: tuple[str, ...] = ()) -> list[Q]:
    """Targets with refIds A, B, C, ..."""
    return [
        Q(q, ref=chr(ord("A") + i), table=table, alias=aliases[i] if i < len(aliases) else "")
        for i, q in enumerate(queries)
    ]


@dataclass
class Grid:
    """Places panels left to right, wrapping at 24 columns; a row header spans the width."""

    x: int = 0
    y: int = 0
    row_h: int = 0
    next_id: int = 1
    panels: list[Any] = field(default_factory=list)

    def add(self, panel: Any, w: int, h: int) -> Any:
        if not 0 < w <= GRID_COLUMNS:
            raise ValueError(f"panel width {w} outside 1..{GRID_COLUMNS}")
        if self.x + w > GRID_COLUMNS:
            self.newline()
        panel.grid_pos(dm.GridPos(h=h, w=w, x=self.x, y=self.y))
        panel.id(self.next_id)
        if hasattr(panel, "datasource"):
            panel.datasource(DATASOURCE)
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


def new_dashboard(uid: str, title: str, tags: list[str], time_from: str = "now-24h") -> gd.Dashboard:
    return (
        gd.Dashboard(title)
        .uid(uid)
        .tags(["aquavolt", *tags])
        .editable()
        .refresh("30s")
        .time(time_from, "now")
        .timezone("browser")
    )


def finish(board: gd.Dashboard, grid: Grid) -> dict[str, Any]:
    """Attach the grid's panels and return the dashboard as Grafana JSON (a dict)."""
    for p in grid.panels:
        if isinstance(p, gd.Row):
            board.with_row(p)
        else:
            board.with_panel(p)
    out: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return out


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    """Absolute thresholds: ``(None, 'green'), (207, 'red')`` ..."""
    return gd.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps]
    )
