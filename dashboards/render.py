"""A static picture of a dashboard, drawn with matplotlib from the same queries Grafana
sends (macros substituted by :mod:`dashboards.macros`), laid out on Grafana's 24-column
grid. Used for the README where no Grafana runs; not a replacement for Grafana."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from aquavolt.dashboards.macros import TimeRange, variable_values
from aquavolt.influx import Influx

ROW_PX = 30  # Grafana's grid row height, in pixels
DARK = {"figure.facecolor": "#111217", "axes.facecolor": "#181b1f", "axes.edgecolor": "#2c3235",
        "text.color": "#ccccdc", "axes.labelcolor": "#ccccdc", "xtick.color": "#9fa7b3",
        "ytick.color": "#9fa7b3", "axes.titlecolor": "#ccccdc", "font.size": 8}


def _label(series: dict[str, Any], column: str, alias: str) -> str:
    tags = series.get("tags") or {}
    if alias:
        return alias.replace("$tag_priority", tags.get("priority", ""))
    parts = [v for v in tags.values() if v] + ([column] if column not in ("mean", "last", "value") else [])
    return " ".join(parts) or column


def _results(ix: Influx, panel: dict[str, Any], rng: TimeRange) -> list[tuple[str, list, list]]:
    """(label, times, values) per series and column of every target of a panel."""
    out = []
    for t in panel.get("targets") or []:
        for s in ix.query(rng.substitute(t["query"])):
            cols = s["columns"]
            for ci, col in enumerate(cols[1:], start=1):
                rows = [(r[0], r[ci]) for r in s["values"] if isinstance(r[ci], int | float)]
                if rows:
                    times = [datetime.fromtimestamp(r[0] / 1000, UTC) for r in rows]
                    out.append((_label(s, col, t.get("alias", "")), times, [r[1] for r in rows]))
    return out


def _table_rows(ix: Influx, panel: dict[str, Any], rng: TimeRange) -> tuple[list[str], list[list[str]]]:
    for t in panel.get("targets") or []:
        for s in ix.query(rng.substitute(t["query"])):
            tags = s.get("tags") or {}
            cols = [*tags.keys(), *s["columns"][1:]]
            rows = [[*tags.values(), *(str(v)[:28] for v in r[1:])] for r in s["values"]]
            return cols, rows[:8]
    return [], []


def _draw(ax: Axes, ix: Influx, panel: dict[str, Any], rng: TimeRange) -> None:
    kind = panel["type"]
    rng = rng.for_panel(panel)
    ax.set_title(panel.get("title", ""), loc="left", fontsize=8)
    if kind in ("timeseries", "state-timeline"):
        bars = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("drawStyle") == "bars"
        for label, times, values in _results(ix, panel, rng)[:8]:
            if bars:
                ax.bar(times, values, width=0.6, label=label, alpha=0.7)
            else:
                ax.plot(times, values, label=label, linewidth=1, drawstyle="steps-post"
                        if kind == "state-timeline" else "default")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
            if defaults.get("custom", {}).get("thresholdsStyle"):
                ax.axhline(step["value"], color=step["color"], linestyle="--", linewidth=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", frameon=False)
        ax.tick_params(axis="x", labelsize=6)
    elif kind == "stat":
        res = _results(ix, panel, rng)
        ax.axis("off")
        for i, (label, _t, values) in enumerate(res[:4]):
            ax.text(0.5, 0.75 - i * 0.3, f"{values[-1]:.4g}", ha="center", va="center", fontsize=16,
                    color="#73bf69", transform=ax.transAxes)
            ax.text(0.5, 0.6 - i * 0.3, label, ha="center", fontsize=6, transform=ax.transAxes)
    elif kind == "piechart":
        res = _results(ix, panel, rng)
        if res:
            ax.pie([v[-1] for _l, _t, v in res], labels=[lab for lab, _t, _v in res],
                   textprops={"fontsize": 6})
    elif kind == "table":
        ax.axis("off")
        cols, rows = _table_rows(ix, panel, rng)
        if rows:
            tab = ax.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="left")
            tab.auto_set_font_size(False)
            tab.set_fontsize(6)
            for (r, _c), cell in tab.get_celld().items():  # Grafana's dark table, not white cells
                cell.set_facecolor("#22252b" if r == 0 else DARK["axes.facecolor"])
                cell.set_edgecolor(DARK["axes.edgecolor"])
                cell.get_text().set_color(DARK["text.color"])
    elif kind == "geomap":
        _draw_map(ax, ix, panel, rng)


def _draw_map(ax: Axes, ix: Influx, panel: dict[str, Any], rng: TimeRange) -> None:
    loc_q, alarm_q = (t["query"] for t in panel["targets"][:2])
    active: dict[str, float] = {}
    for s in ix.query(rng.substitute(alarm_q)):
        active[s["tags"]["asset"]] = s["values"][0][1] or 0
    xs, ys, cs = [], [], []
    for s in ix.query(rng.substitute(loc_q)):
        _t, lat, lon, _name = s["values"][0]
        xs.append(lon)
        ys.append(lat)
        cs.append("#f2495c" if active.get(s["tags"]["asset"], 0) > 0 else "#73bf69")
    ax.scatter(xs, ys, c=cs, s=6)
    ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize=6)


def render_dashboard(board: dict[str, Any], ix: Influx, start_ms: int, end_ms: int, out: Path,
                     max_panels: int = 12) -> Path:
    rng = TimeRange(start_ms, end_ms, variable_values(board))
    panels = [p for p in board["panels"] if p["type"] != "row"][:max_panels]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    top = min(p["gridPos"]["y"] for p in panels)
    with plt.rc_context(DARK):
        fig = plt.figure(figsize=(16, (bottom - top) * ROW_PX / 100 + 0.6))
        fig.suptitle(board["title"], x=0.01, ha="left", fontsize=11)
        spec = fig.add_gridspec(bottom - top, 24, hspace=1.2, wspace=1.2)
        for p in panels:
            g = p["gridPos"]
            ax = fig.add_subplot(spec[g["y"] - top : g["y"] - top + g["h"], g["x"] : g["x"] + g["w"]])
            _draw(ax, ix, p, rng)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return out
