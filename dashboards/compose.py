"""The compose stack's copy of a field: the same field with every Modbus TCP host and
OPC-UA endpoint moved to the simulator's service name, since inside docker compose the
simulator listens on its own container's address and the edge agents reach it by name.

    python -m dashboards.compose examples/demo-town.yaml docker/field-compose.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

HEADER = ("# Generated from {src} by `python -m dashboards.compose`: the same field with every\n"
          "# Modbus TCP host and OPC-UA endpoint on the simulator's compose service, {host!r}.\n")


def compose_data(data: dict[str, Any], host: str = "sim") -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data))
    for gw in out.get("gateways", []):
        for bus in gw.get("buses", []):
            if bus.get("kind") == "modbus_tcp":
                bus["host"] = host
            elif bus.get("kind") == "opcua":
                parts = urlsplit(bus["endpoint"])
                bus["endpoint"] = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or 4840}"))
    return out


def write_compose_field(src: Path, dst: Path, host: str = "sim") -> Path:
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    text = yaml.safe_dump(compose_data(data, host), sort_keys=False, allow_unicode=True, width=200)
    dst.write_text(HEADER.format(src=src.as_posix(), host=host) + text, encoding="utf-8")
    return dst


if __name__ == "__main__":
    print(write_compose_field(Path(sys.argv[1]), Path(sys.argv[2])))
