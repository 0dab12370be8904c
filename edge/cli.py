"""``aquavolt edge run``, ``aquavolt edge probe`` and ``aquavolt edge export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aquavolt.clock import clock_from_env
from aquavolt.settings import MqttSettings


def _run(args: argparse.Namespace) -> int:
    from aquavolt.edge.agent import Agent, run_agent
    from aquavolt.edge.config import load_gateway, load_settings

    cfg = load_gateway(args.field, args.gateway, Path(args.profiles_dir) if args.profiles_dir else None)
    settings = load_settings(args.config)
    overrides = {k: v for k, v in (("max_silence_s", args.max_silence_s),
                                   ("health_interval_s", args.health_interval_s)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    try:
        mqtt = MqttSettings.from_env(args.mqtt)
    except ValueError as exc:
        print(f"--mqtt / AQUAVOLT_MQTT_URL: {exc}", file=sys.stderr)
        return 1
    state = Path(args.state_dir or f"/var/lib/aquavolt-edge/{cfg.gateway.id}")
    agent = Agent(cfg, settings, mqtt, state, clock_from_env(f"edge-{cfg.gateway.id}", "edge"))
    run_agent(agent)
    return 0


def _probe(args: argparse.Namespace) -> int:
    from aquavolt.edge.probe import probe

    try:
        print(probe(args.host, args.port, args.serial, args.baud, args.parity, args.unit, args.table,
                    args.address, args.count, args.timeout_s))
    except OSError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    """One gateway's configuration and secrets, nothing else: what is installed on it."""
    from urllib.parse import urlsplit, urlunsplit

    from aquavolt.config import load_field
    from aquavolt.security import write_gateway_bundle

    loaded = load_field(args.field)
    ids = [g.id for g in loaded.field.gateways]
    if args.gateway not in ids:
        print(f"{args.field}: no gateway {args.gateway!r} (has {ids})", file=sys.stderr)
        return 1
    url, ca = None, None
    if args.secrets:
        folder = Path(args.secrets)
        env = folder / "edge" / args.gateway / "mqtt.env"
        if not env.exists():
            print(f"{env}: missing: run `aquavolt security init FIELD --out {folder}`", file=sys.stderr)
            return 1
        url = next(line.split("=", 1)[1] for line in env.read_text(encoding="utf-8").splitlines()
                   if line.startswith("AQUAVOLT_MQTT_URL="))
        if args.broker:
            parts = urlsplit(url)
            auth = parts.netloc.rsplit("@", 1)[0]
            url = urlunsplit(parts._replace(netloc=f"{auth}@{args.broker}"))
        ca = folder / "mosquitto" / "ca.pem"
    out = Path(args.out)
    for path in write_gateway_bundle(loaded, args.gateway, out, url, ca):
        print(path)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("edge", help="gateway agent: Modbus and OPC-UA to MQTT, store and forward")
    sub = p.add_subparsers(dest="edge_command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run one gateway's agent")
    r.add_argument("field", help="field YAML file (with --gateway), or a file holding one gateway")
    r.add_argument("--gateway", help="gateway id in the field file")
    r.add_argument("--state-dir", help="queue, sequence numbers, certificates "
                                        "(default /var/lib/aquavolt-edge/GATEWAY)")
    r.add_argument("--mqtt", help="broker URL (default $AQUAVOLT_MQTT_URL)")
    r.add_argument("--config", help="agent settings YAML (EdgeSettings; see edge/README.md)")
    r.add_argument("--profiles-dir", help="extra profile folder (gateway file only)")
    r.add_argument("--max-silence-s", type=float, help="heartbeat period of unchanged points")
    r.add_argument("--health-interval-s", type=float, help="health period (clock seconds)")
    r.set_defaults(func=_run)

    e = sub.add_parser("export", help="write one gateway's configuration and secrets, nothing else")
    e.add_argument("field", help="field YAML file as deployed (secrets/field.yaml after security init)")
    e.add_argument("gateway", help="gateway id")
    e.add_argument("--out", required=True, help="folder to write (install it on the gateway, keep it secret)")
    e.add_argument("--secrets", help="secrets folder of `aquavolt security init`: adds the gateway's "
                                     "broker URL (mqtt.env) and the broker's CA (ca.pem)")
    e.add_argument("--broker", help="HOST:PORT of the broker as the gateway reaches it (default: the "
                                    "compose service mosquitto:8883)")
    e.set_defaults(func=_export)

    q = sub.add_parser("probe", help="read raw registers and print every interpretation")
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=502)
    q.add_argument("--serial", help="serial port instead of TCP, e.g. /dev/ttyUSB0")
    q.add_argument("--baud", type=int, default=9600)
    q.add_argument("--parity", choices=["N", "E", "O"], default="N")
    q.add_argument("--unit", type=int, default=1, help="unit id")
    q.add_argument("--table", choices=["holding", "input"], default="holding")
    q.add_argument("--address", type=int, default=0, help="protocol address (from 0)")
    q.add_argument("--count", type=int, default=4)
    q.add_argument("--timeout-s", type=float, default=1.0)
    q.set_defaults(func=_probe)
