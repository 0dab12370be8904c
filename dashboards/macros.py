"""Grafana's InfluxQL macro substitution, done the way Grafana's InfluxDB datasource does it,
so that a generated query can be run against InfluxDB without Grafana (the tests, the
static rendering).

- ``$timeFilter`` / ``$__timeFilter``: ``time >= {from}ms and time <= {to}ms``;
- ``$__interval`` / ``$__interval_ms``: the panel resolution (range / max data points,
  at least ``min_interval``), as Grafana rounds it (1s, 10s, 1m, 5m, 1h ...);
- ``${__from}``, ``${__to}``, ``$__from``, ``$__to``: the range ends in epoch milliseconds;
- template variables ``$name``, ``${name}``, ``${name:raw}``, ``[[name]]``;
- a panel's ``timeShift`` (:meth:`TimeRange.for_panel`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

_NICE_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
           21600, 43200, 86400, 604800)
_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")


def interval_text(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def auto_interval_s(start_ms: int, end_ms: int, max_points: int = 1000, min_interval_s: float = 1) -> int:
    """Grafana's rounded interval for a range and a number of points."""
    raw = max((end_ms - start_ms) / 1000 / max_points, min_interval_s)
    return next((n for n in _NICE_S if n >= raw), _NICE_S[-1])


@dataclass(frozen=True)
class TimeRange:
    start_ms: int
    end_ms: int
    variables: Mapping[str, str] = field(default_factory=dict)
    max_points: int = 1000
    min_interval_s: float = 1

    def substitute(self, query: str) -> str:
        interval_s = auto_interval_s(self.start_ms, self.end_ms, self.max_points, self.min_interval_s)
        time_filter = f"time >= {self.start_ms}ms and time <= {self.end_ms}ms"
        builtins = {
            "timeFilter": time_filter,
            "__timeFilter": time_filter,
            "__interval": interval_text(interval_s),
            "__interval_ms": str(interval_s * 1000),
            "__from": str(self.start_ms),
            "__to": str(self.end_ms),
        }

        def repl(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(3) or m.group(4)
            if name in builtins:
                return builtins[name]
            if name in self.variables:
                return self.variables[name]
            raise KeyError(f"query uses ${name}, which is neither a Grafana macro nor a variable")

        return _VAR.sub(repl, query)

    def for_panel(self, panel: Mapping[str, Any]) -> TimeRange:
        """The range a panel queries: the dashboard's, moved back by the panel's ``timeShift``
        (``364d``, ``1h`` ...), with the panel's minimum ``interval`` (``10m``), as Grafana does."""
        shift, minimum = panel.get("timeShift"), panel.get("interval")
        ms = _duration_s(shift, "time shift") * 1000 if shift else 0
        min_s = _duration_s(minimum, "interval") if minimum else self.min_interval_s
        return TimeRange(self.start_ms - ms, self.end_ms - ms, self.variables, self.max_points, min_s)


def _duration_s(text: Any, what: str) -> int:
    m = re.fullmatch(r"(\d+)([smhdw])", str(text).strip())
    if m is None:
        raise ValueError(f"panel {what} {text!r} is not N followed by s, m, h, d or w")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


_GUARD = re.compile(r"(\d+) - (\d+) (<=|>=|<|>) (\d+)")
_OPS = {"<=": int.__le__, ">=": int.__ge__, "<": int.__lt__, ">": int.__gt__}


def guards_hold(query: str) -> bool:
    """Whether the range guards of a substituted query (``${__to} - ${__from} <= N``, literal
    comparisons after substitution: dashboards/queries.py's bands) all hold: a target whose
    guard does not hold reads nothing at that range, by design (another band's target does)."""
    return all(_OPS[op](int(a) - int(b), int(c)) for a, b, op, c in _GUARD.findall(query))


def dashboard_queries(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (panel, target) of a dashboard JSON, rows' nested panels included."""
    for panel in board.get("panels", []):
        nested = panel.get("panels") or []
        for p in [panel, *nested]:
            for t in p.get("targets") or []:
                yield p, t


def variable_values(board: Mapping[str, Any]) -> dict[str, str]:
    """The current (or first) value of each template variable of a dashboard."""
    out: dict[str, str] = {}
    for var in board.get("templating", {}).get("list", []):
        cur = var.get("current") or {}
        value = cur.get("value")
        if not value and var.get("options"):
            value = var["options"][0]["value"]
        out[var["name"]] = value if isinstance(value, str) else "|".join(value or [])
    return out
