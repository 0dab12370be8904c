"""Structure of the generated dashboards: unique uids and ids, a 24-column grid without
overlaps, the provisioned datasource everywhere, every asset of the field on some panel,
and panels that follow the field file (a new pump or zone gets its panels)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import yaml

from aquavolt.config import load_field
from aquavolt.dashboards.assets import field_assets
from aquavolt.dashboards.build import build_all, write_all
from aquavolt.dashboards.grafana import DATASOURCE_UID
from aquavolt.dashboards.macros import dashboard_queries

from .conftest import DEMO


def _panels(board):
    for p in board["panels"]:
        yield p
        yield from p.get("panels") or []


def test_uids_and_ids_unique(boards) -> None:
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids)) == 6
    for b in boards.values():
        ids = [p["id"] for p in _panels(b)]
        assert len(ids) == len(set(ids)), b["uid"]


def test_grid_within_24_columns_without_overlap(boards) -> None:
    for b in boards.values():
        rects = []
        for p in _panels(b):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, (b["uid"], p["title"])
            assert g["x"] + g["w"] <= 24, (b["uid"], p["title"], g)
            rects.append((p["title"], g))
        for (t1, a), (t2, c) in itertools.combinations(rects, 2):
            apart = (a["x"] + a["w"] <= c["x"] or c["x"] + c["w"] <= a["x"]
                     or a["y"] + a["h"] <= c["y"] or c["y"] + c["h"] <= a["y"])
            assert apart, f"{b['uid']}: {t1!r} {a} overlaps {t2!r} {c}"


def test_every_panel_and_target_uses_the_provisioned_datasource(boards, tmp_path) -> None:
    write_all(load_field(DEMO), tmp_path)
    prov = yaml.safe_load((tmp_path / "provisioning" / "datasources" / "aquavolt.yaml").read_text())
    assert prov["datasources"][0]["uid"] == DATASOURCE_UID
    for b in boards.values():
        for p in _panels(b):
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == DATASOURCE_UID, (b["uid"], p["title"])
            assert p["targets"], (b["uid"], p["title"])
        for _p, t in dashboard_queries(b):
            assert t["datasource"]["uid"] == DATASOURCE_UID
            assert t["rawQuery"] is True


def test_every_asset_of_the_field_appears_on_some_panel(boards, demo) -> None:
    text = json.dumps([[list(_panels(b)), b.get("templating")] for b in boards.values()])
    missing = [a.id for a in field_assets(demo.field)
               if not re.search(rf"(?<![A-Za-z0-9_.-]){re.escape(a.id)}(?![A-Za-z0-9_.-])", text)]
    assert not missing


def test_build_writes_json_and_provisioning(tmp_path) -> None:
    paths = write_all(load_field(DEMO), tmp_path, dashboards_path="/dash")
    boards = sorted((tmp_path / "dashboards").glob("*.json"))
    assert len(boards) == 6 and all(p in paths for p in boards)
    assert json.loads(boards[0].read_text())["uid"].startswith("aquavolt-")
    prov = yaml.safe_load((tmp_path / "provisioning" / "dashboards" / "aquavolt.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/dash"


def test_a_new_pump_and_zone_get_their_panels(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    gw = data["gateways"][0]
    gw["devices"] += [
        {"id": "pump-3", "profile": "av_pump1", "bus": "plc", "unit_id": 8},
        {"id": "inlet-zone-c", "profile": "av_flow1", "bus": "plc", "unit_id": 9},
    ]
    data["water"]["pumps"].append({**data["water"]["pumps"][0], "id": "pump-3", "device": "pump-3"})
    data["water"]["zones"].append({**data["water"]["zones"][0], "id": "zone-c", "name": "Zone C",
                                   "inlet_meters": ["inlet-zone-c"], "pressure_sensors": []})
    path = tmp_path / "field.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = build_all(load_field(DEMO))["water"]
    after = build_all(load_field(path))["water"]
    titles = [p["title"] for p in _panels(after)]
    assert any("zone-c inflow" in t for t in titles)
    assert any("(pump-3)" in t for t in titles)
    assert any("'inlet-zone-c'" in t["query"] for _p, t in dashboard_queries(after))
    assert len(list(_panels(after))) > len(list(_panels(before)))
