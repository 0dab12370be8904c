"""``aquavolt edge run`` and ``aquavolt edge probe``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aquavolt.clock import clock_from_env
from aquavolt.settings import MqttSettings


def _run(args: argparse.Namespace) -> int:
    from edge.agent import Agent, run_agent
    from edge.config import load_gateway, load_settings

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
    from edge.probe import probe

    try:
        print(probe(args.host, args.port, args.serial, args.baud, args.parity, args.unit, args.table,
                    args.address, args.count, args.timeout_s))
    except OSError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
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
