"""``aquavolt collector run``: MQTT to InfluxDB, at least once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aquavolt.collector.config import CollectorConfig
from aquavolt.config import load_model
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.settings import InfluxSettings, MqttSettings

_FLAGS = {
    # flag: (config field, type, help)
    "--mqtt": ("mqtt_url", str, "MQTT URL (default: $AQUAVOLT_MQTT_URL)"),
    "--influx": ("influx_url", str, "InfluxDB URL (default: $AQUAVOLT_INFLUX_URL)"),
    "--state-dir": ("state_dir", Path, "client id and dead letters (default var/collector)"),
    "--client-id": ("client_id", str, "MQTT client id (default: made once, kept in the state dir)"),
    "--metrics-port": ("metrics_port", int, "Prometheus /metrics on 127.0.0.1 (0: off; default 9108)"),
    "--share-group": ("share_group", str, "share the load with other collectors of this group"),
    "--batch-points": ("batch_points", int, "points per write (default 5000)"),
    "--flush-interval-ms": ("flush_interval_ms", int, "longest wait before a write (default 200)"),
    "--gzip-level": ("gzip_level", int,
                     "0 to 9, 0: uncompressed (default: 0 to a loopback InfluxDB, else 1)"),
    "--stats-interval-s": ("stats_interval_s", float, "collector_stats period (default 10)"),
    "--field": ("field", Path, "field file: read its sparkplug gateways' edge nodes too (spBv1.0)"),
    "--sparkplug-host-id": ("sparkplug_host_id", str, "primary host id of spBv1.0/STATE (default aquavolt)"),
    "--max-future-s": ("max_future_s", float,
                       "refuse data stamped this far ahead of the clock (event s, default 300)"),
}


def build_config(args: argparse.Namespace) -> CollectorConfig:
    base: dict[str, Any] = {}
    if args.config:
        base = load_model(args.config, CollectorConfig).model_dump(exclude_unset=True)
    for flag, (name, _type, _help) in _FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            base[name] = value
    if getattr(args, "event_time_rollups", None):
        base["event_time_rollups"] = True
    try:
        return CollectorConfig.model_validate(base)
    except ValueError as exc:
        raise ConfigError([ConfigIssue("command line", "", str(exc))]) from None


def _run(args: argparse.Namespace) -> int:
    from aquavolt.collector.service import run_collector

    cfg = build_config(args)
    try:
        mqtt = MqttSettings.from_env(cfg.mqtt_url)
        influx = InfluxSettings.from_env(cfg.influx_url)
    except ValueError as exc:
        raise ConfigError([ConfigIssue("command line", "", str(exc))]) from None
    return run_collector(cfg, mqtt, influx)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("collector", help="MQTT to InfluxDB, at least once")
    sub = p.add_subparsers(dest="collector_command", metavar="COMMAND", required=True)
    r = sub.add_parser("run", help="subscribe to telemetry, status, health and events; write them")
    r.add_argument("--config", type=Path, default=None, help="collector YAML file (flags win)")
    for flag, (_name, typ, help_text) in _FLAGS.items():
        r.add_argument(flag, type=typ, default=None, help=help_text)
    r.add_argument("--event-time-rollups", action="store_true", default=None,
                   help="make the hourly and daily rollups on event time, once written (simulated fields)")
    r.set_defaults(func=_run)
