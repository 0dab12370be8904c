"""Build every dashboard of a field and write them, with Grafana provisioning files.

Output layout (``--out DIR``)::

    DIR/dashboards/aquavolt-<name>.json       one dashboard each
    DIR/provisioning/datasources/aquavolt.yaml
    DIR/provisioning/dashboards/aquavolt.yaml (a file provider reading DIR/dashboards)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from aquavolt.config import LoadedField
from aquavolt.dashboards import boards
from aquavolt.dashboards.customer import customer
from aquavolt.dashboards.grafana import DATASOURCE_TYPE, DATASOURCE_UID, DEFAULT_CONSOLE_URL

BUILDERS: dict[str, Callable[[LoadedField, str], dict[str, Any]]] = {
    "overview": boards.overview,
    "water": boards.water,
    "electricity": boards.electricity,
    "alarms": boards.alarms,
    "gateways": boards.gateways,
    "customer": customer,
}
FOLDER = "aquavolt"


def build_all(lf: LoadedField, console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, dict[str, Any]]:
    """Dashboard name -> Grafana JSON; ``console_url``: the operator console the alarm links open."""
    return {name: build(lf, console_url) for name, build in BUILDERS.items()}


def datasource_provisioning(influx_url: str, database: str, user: str = "",
                            password: str = "") -> dict[str, Any]:
    ds: dict[str, Any] = {
        "name": "aquavolt InfluxDB",
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": influx_url,
        **({"user": user} if user else {}),
        "isDefault": True,
        "editable": False,
        "jsonData": {"dbName": database, "httpMode": "POST", "timeInterval": "10s"},
    }
    if user:
        ds["secureJsonData"] = {"password": password}
    return {"apiVersion": 1, "datasources": [ds]}


def dashboard_provisioning(path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "aquavolt",
            "folder": FOLDER,
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": path, "foldersFromFilesStructure": False},
        }],
    }


DATASOURCE_HEADER = (
    "# Grafana reads InfluxDB as the read-only user `grafana`; its password comes from the\n"
    "# environment (secrets/env/grafana.env, written by `aquavolt security init`).\n"
)


def write_all(lf: LoadedField, out: Path, influx_url: str = "http://influxdb:8086",
              database: str = "aquavolt",
              dashboards_path: str = "/var/lib/grafana/dashboards/aquavolt",
              console_url: str = DEFAULT_CONSOLE_URL, influx_user: str = "grafana",
              influx_password: str = "$AQUAVOLT_INFLUX_READ_PASSWORD") -> list[Path]:
    """Write the dashboards and provisioning files; return the paths written. The datasource
    reads as the read-only InfluxDB user, its password from Grafana's environment (never
    written here): an empty ``influx_user`` is a database without authentication."""
    written: list[Path] = []
    ddir = out / "dashboards"
    ddir.mkdir(parents=True, exist_ok=True)
    for board in build_all(lf, console_url).values():
        path = ddir / f"{board['uid']}.json"
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    prov = {
        out / "provisioning" / "datasources" / "aquavolt.yaml":
            datasource_provisioning(influx_url, database, influx_user, influx_password),
        out / "provisioning" / "dashboards" / "aquavolt.yaml": dashboard_provisioning(dashboards_path),
    }
    for path, doc in prov.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        head = DATASOURCE_HEADER if "datasources" in doc and influx_user else ""
        path.write_text(head + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written
