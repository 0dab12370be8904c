"""The static rendering (matplotlib) draws a dashboard from InfluxDB data through the same
queries Grafana sends; the data are the schema-shaped points of conftest.py."""

from __future__ import annotations

import struct

from aquavolt.dashboards.render import render_dashboard
from aquavolt.influx import Influx


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_render_overview(filled, boards, tmp_path) -> None:
    ix = Influx(filled.settings)
    for name in ("overview",):
        out = render_dashboard(boards[name], ix, filled.start_ms, filled.end_ms, tmp_path / f"{name}.png")
        w, h = _png_size(out.read_bytes())
        assert w > 800 and h > 200
        assert out.stat().st_size > 20_000  # drawn data, not an empty frame
