"""Copy a field file onto free local ports and private serial paths.

Tests, ``aquavolt replay`` and parallel demos run the same field side by side: each copy
gets its own Modbus TCP ports, OPC-UA endpoints and serial device paths, so that runs never
collide. Comments are not kept in the copy. A run may also switch gateways of the copy to Sparkplug B
northbound (``sparkplug``: the mixed field of ``aquavolt demo --sparkplug GATEWAY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.harness.servers import free_port


def relocate_data(data: dict[str, Any], serial_dir: Path) -> dict[str, Any]:
    """A deep copy of field data with every bus moved to a free port or a path under
    ``serial_dir`` (serial lines without parity, as pseudo-terminals need); ports shared by
    several buses stay shared. ``profiles_dir`` is kept."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data))
    ports: dict[int, int] = {}

    def port_for(old: int) -> int:
        if old not in ports:
            ports[old] = free_port()
        return ports[old]

    for gw in out.get("gateways", []):
        for bus in gw.get("buses", []):
            kind = bus.get("kind")
            if kind == "modbus_tcp":
                bus["host"] = "127.0.0.1"
                bus["port"] = port_for(int(bus.get("port", 502)))
            elif kind == "modbus_rtu":
                # The simulator serves serial lines on pseudo-terminals, which refuse even and
                # odd parity (tcsetattr EINVAL): the copy runs them without parity.
                bus["serial_port"] = str(serial_dir / f"{gw['id']}-{bus['id']}")
                bus["parity"] = "N"
            elif kind == "opcua":
                parts = urlsplit(bus["endpoint"])
                new = port_for(parts.port or 4840)
                bus["endpoint"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{new}"))
    return out


def speak_sparkplug(data: dict[str, Any], gateways: tuple[str, ...], src: Path | str) -> None:
    """Set ``northbound: sparkplug`` on these gateways of field data (in place): an aquavolt
    gateway then publishes its data as a Sparkplug B edge node, the control room unchanged."""
    known = {gw.get("id"): gw for gw in data.get("gateways", [])}
    for gid in gateways:
        gw = known.get(gid)
        if gw is None:
            why = f"{gid}: no such gateway (the field has {', '.join(sorted(str(k) for k in known))})"
        elif gw.get("kind", "aquavolt") != "aquavolt":
            why = f"{gid}: a {gw['kind']} gateway is not an aquavolt edge agent"
        else:
            gw["northbound"] = "sparkplug"
            continue
        raise ConfigError([ConfigIssue(str(src), "--sparkplug", why)])


def relocate_file(src: Path | str, dst: Path | str, serial_dir: Path | str | None = None,
                  sparkplug: tuple[str, ...] = ()) -> Path:
    """Write a relocated copy of the field file ``src`` to ``dst``; return ``dst``. The
    gateways named in ``sparkplug`` speak Sparkplug B northbound in the copy."""
    src, dst = Path(src), Path(dst)
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    speak_sparkplug(data, sparkplug, src)
    sdir = Path(serial_dir) if serial_dir else dst.parent / "serial"
    sdir.mkdir(parents=True, exist_ok=True)
    moved = relocate_data(data, sdir)
    if moved.get("profiles_dir"):
        moved["profiles_dir"] = str((src.parent / moved["profiles_dir"]).resolve())
    dst.write_text(yaml.safe_dump(moved, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return dst
