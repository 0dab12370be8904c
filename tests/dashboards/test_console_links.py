"""Links from the dashboards to the operator console (rules/console, ``/console/?asset=ID``):
each asset's panels link to its alarms, the alarm tables' asset column to each row's asset;
the console's address comes from ``--console-url`` / ``AQUAVOLT_CONSOLE_URL``."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

from aquavolt.dashboards.build import build_all
from aquavolt.dashboards.grafana import DEFAULT_CONSOLE_URL

from .conftest import DEMO, ROOT


def _panels(board):
    for p in board["panels"]:
        yield p
        yield from p.get("panels") or []


def _linked_assets(board, base: str = DEFAULT_CONSOLE_URL) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in _panels(board):
        for link in p.get("links") or []:
            url = urlsplit(link["url"])
            assert f"{url.scheme}://{url.netloc}{url.path}" == base, link
            out.setdefault(p["title"], set()).update(parse_qs(url.query)["asset"])
    return out


def test_every_assets_panels_link_to_its_alarms(boards, demo) -> None:
    f = demo.field
    linked = {**_linked_assets(boards["water"]), **_linked_assets(boards["electricity"])}
    assets = set().union(*linked.values())
    expected = ({z.id for z in f.water.zones} | {p.id for p in f.water.pumps} | {t.id for t in f.water.tanks}
                | {p.device for p in f.water.pumps} | {s.id for s in f.electricity.substations}
                | {fd.id for s in f.electricity.substations for fd in s.feeders}
                | {t.id for s in f.electricity.substations for fd in s.feeders for t in fd.transformers}
                | {t.device for s in f.electricity.substations for fd in s.feeders for t in fd.transformers})
    assert expected <= assets, expected - assets
    assert linked["tx-1a currents"] == {"tx-1a", "tx-1a-meter"}
    assert linked["pump-1 motor current"] == {"pump-1"}


def test_alarm_tables_link_each_rows_asset(boards) -> None:
    tables = [(name, p) for name, b in boards.items() for p in _panels(b)
              if p["type"] == "table" and any("alarm_event" in t["query"] for t in p["targets"])]
    assert len(tables) >= 4  # overview, alarms (active, history), electricity outages
    for name, p in tables:
        links = [prop["value"][0]["url"] for o in p["fieldConfig"]["overrides"]
                 if o["matcher"] == {"id": "byName", "options": "asset"}
                 for prop in o["properties"] if prop["id"] == "links"]
        assert links == [DEFAULT_CONSOLE_URL + "?asset=${__value.raw:percentencode}"], (name, p["title"])


def test_the_console_address_comes_from_configuration(demo, tmp_path) -> None:
    custom = build_all(demo, "https://control.example/ops/console/")
    assert _linked_assets(custom["water"], "https://control.example/ops/console/")
    out = tmp_path / "grafana"
    subprocess.run([sys.executable, "-m", "aquavolt.cli", "dashboards", "build", str(DEMO), "--out", str(out),
                    "--console-url", "https://control.example/console/"], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    board = json.loads((out / "dashboards" / "aquavolt-alarms.json").read_text())
    assert "https://control.example/console/?asset=" in json.dumps(board)
