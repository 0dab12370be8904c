"""``aquavolt rules run FIELD.yaml --state-dir DIR``: the rules engine and alarm API."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aquavolt.clock import clock_from_env
from aquavolt.config import load_field, load_model
from aquavolt.influx import Influx
from aquavolt.settings import INFLUX_ENV, InfluxSettings, MqttSettings
from rules.api import CustomerSink

log = logging.getLogger("aquavolt.rules")


def customer_sink(loaded: Any, args: argparse.Namespace) -> CustomerSink | None:
    """``rules.sms.build_customer_sink(loaded, args)`` when that module defines it."""
    try:
        sms = importlib.import_module("rules.sms")
    except ModuleNotFoundError as exc:
        if exc.name not in ("rules.sms",):
            raise
        return None
    build = getattr(sms, "build_customer_sink", None)
    return None if build is None else build(loaded, args)  # type: ignore[no-any-return]


async def _main(args: argparse.Namespace) -> int:
    from rules.http import load_tokens, serve
    from rules.notify import Notifier, NotifyConfig
    from rules.service import Engine

    loaded = load_field(args.field)
    tokens = load_tokens(args.tokens) if args.tokens else {}
    if not tokens:
        log.warning("no --tokens file: every API call except /health and /openapi.json is refused")
    notifier = Notifier(load_model(args.notify, NotifyConfig)) if args.notify else None
    settings = MqttSettings.from_env(args.mqtt)
    clock = clock_from_env()
    influx_url = args.influx or os.environ.get(INFLUX_ENV)
    influx = Influx(InfluxSettings.from_url(influx_url)) if influx_url else None
    engine = Engine(loaded, settings, Path(args.state_dir), clock, notifier, tick_every_ms=args.tick_ms,
                    influx=influx)
    def publish(topic: str, payload: bytes, retain: bool = False) -> None:
        engine.client.publish(topic, payload, qos=1, retain=retain)

    args.publish = publish
    args.topics, args.clock = engine.topics, clock
    engine.customer_sink = customer_sink(loaded, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        # a Python-level handler runs in the main thread even while a processing round runs
        # (loop.add_signal_handler's would wait for the loop): the watchdog thread ends the
        # process if the loop has not stopped a few seconds later
        engine.watchdog.request_stop()
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    async def api() -> Any:
        runner = await serve(engine, tokens, args.api_host, args.api_port)
        log.info("operator API on http://%s:%d (OpenAPI at /openapi.json)", args.api_host, args.api_port)
        return runner

    await engine.run(stop, api if args.api_port else None)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rules", help="rules engine: alarms (ISA-18.2), detectors, operator API")
    sub = p.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    r = sub.add_parser("run", help="consume telemetry from MQTT, raise and manage alarms")
    r.add_argument("field", help="field YAML file")
    r.add_argument("--state-dir", required=True,
                   help="folder for alarms.sqlite (alarm state, history, audit)")
    r.add_argument("--mqtt", default=None, help="MQTT URL (default $AQUAVOLT_MQTT_URL)")
    r.add_argument("--influx", default=None, help="InfluxDB URL where detector metrics are written "
                   "(default $AQUAVOLT_INFLUX_URL); alarm events reach InfluxDB through the collector")
    r.add_argument("--api-host", default="127.0.0.1")
    r.add_argument("--api-port", type=int, default=8470, help="operator API port (0: no API)")
    r.add_argument("--tokens", default=None, help="YAML 'operator: token' file for the API")
    r.add_argument("--notify", default=None, help="notification config YAML (email, webhook)")
    r.add_argument("--tick-ms", type=int, default=None,
                   help="override the field's rules.event_time.tick_s: event milliseconds between "
                   "ticks of time-based rules (stale, delays); 0 is taken as 1")
    r.set_defaults(func=run)
