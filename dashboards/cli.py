"""``aquavolt dashboards``: build the control room from a field file, push it to Grafana,
write the asset positions the overview map reads, render a static picture.

    aquavolt dashboards build FIELD.yaml --out DIR [--influx URL --database NAME]
    aquavolt dashboards push FIELD.yaml --url http://grafana:3000 (--token T | --user U --password P)
    aquavolt dashboards assets FIELD.yaml        (InfluxDB from AQUAVOLT_INFLUX_URL or --influx)
    aquavolt dashboards render FIELD.yaml --out docs/img/water.png --from ISO --to ISO
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from aquavolt.config import load_field


def _console_url(args: argparse.Namespace) -> str:
    from aquavolt.dashboards.grafana import DEFAULT_CONSOLE_URL

    return str(args.console_url or os.environ.get("AQUAVOLT_CONSOLE_URL") or DEFAULT_CONSOLE_URL)


def _build(args: argparse.Namespace) -> int:
    from aquavolt.dashboards.build import write_all

    lf = load_field(args.field)
    for path in write_all(lf, Path(args.out), influx_url=args.influx_url, database=args.database,
                          dashboards_path=args.dashboards_path, console_url=_console_url(args)):
        print(path)
    return 0


def _push(args: argparse.Namespace) -> int:
    from aquavolt.dashboards.build import build_all, datasource_provisioning
    from aquavolt.dashboards.push import PushError, connect, push

    lf = load_field(args.field)
    ds = datasource_provisioning(args.influx_url, args.database)["datasources"][0]
    ds.pop("editable", None)
    password = args.password or os.environ.get("GRAFANA_PASSWORD")
    token = args.token or os.environ.get("GRAFANA_TOKEN")
    api = connect(args.url, token=token, user=args.user, password=password)
    try:
        result = push(api, ds, list(build_all(lf, _console_url(args)).values()))
    except PushError as exc:
        print(f"aquavolt dashboards push: {exc}", file=sys.stderr)
        return 1
    finally:
        api.client.s.close()  # the HTTP session's idle-connection watcher thread ends with it
    print(f"datasource {result.datasource}; folder {result.folder_uid}; "
          f"dashboards {', '.join(result.dashboards)}")
    return 0


def _assets(args: argparse.Namespace) -> int:
    from aquavolt.clock import clock_from_env
    from aquavolt.dashboards.assets import location_lines
    from aquavolt.influx import Influx, InfluxError
    from aquavolt.schema import RP_EVENTS, events_policy
    from aquavolt.settings import InfluxSettings

    lf = load_field(args.field)
    influx = Influx(InfluxSettings.from_env(args.influx))
    lines = location_lines(lf.field, clock_from_env().now_ms())
    try:
        influx.create_database()
        influx.query(events_policy(influx.s.database))
        Influx(influx.s.model_copy(update={"retention_policy": RP_EVENTS})).write(lines)
    except InfluxError as exc:
        print(f"aquavolt dashboards assets: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(lines)} asset positions to {influx.s.url} ({influx.s.database})")
    return 0


def _render(args: argparse.Namespace) -> int:
    from aquavolt.clock import parse_instant
    from aquavolt.dashboards.build import build_all
    from aquavolt.dashboards.render import render_dashboard
    from aquavolt.influx import Influx
    from aquavolt.settings import InfluxSettings

    lf = load_field(args.field)
    board = build_all(lf)[args.dashboard]
    influx = Influx(InfluxSettings.from_env(args.influx))
    start_ms, end_ms = int(parse_instant(args.start) * 1000), int(parse_instant(args.end) * 1000)
    render_dashboard(board, influx, start_ms, end_ms, Path(args.out), max_panels=args.max_panels)
    print(args.out)
    return 0


CONSOLE_HELP = ("the operator console the dashboards' alarm links open, as the operators' browsers reach it "
                "(default AQUAVOLT_CONSOLE_URL, else https://127.0.0.1:8470/console/ as docker-compose.yml "
                "publishes it)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dashboards", help="the control room in Grafana, as code")
    sub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="write the dashboards (Grafana JSON) and provisioning files")
    b.add_argument("field", help="field YAML file")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--influx", dest="influx_url", default="http://influxdb:8086",
                   help="InfluxDB URL as Grafana reaches it")
    b.add_argument("--influx-url", dest="influx_url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    b.add_argument("--database", default="aquavolt")
    b.add_argument("--dashboards-path", default="/var/lib/grafana/dashboards/aquavolt",
                   help="where Grafana finds the dashboard JSON (file provider path)")
    b.add_argument("--console-url", help=CONSOLE_HELP)
    b.set_defaults(func=_build)

    u = sub.add_parser("push", help="send the datasource and dashboards to Grafana's HTTP API")
    u.add_argument("field", help="field YAML file")
    u.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    u.add_argument("--token", help="service account token (or GRAFANA_TOKEN)")
    u.add_argument("--user", help="basic auth user")
    u.add_argument("--password", help="basic auth password (or GRAFANA_PASSWORD)")
    u.add_argument("--influx", dest="influx_url", default="http://influxdb:8086",
                   help="InfluxDB URL as Grafana reaches it")
    u.add_argument("--influx-url", dest="influx_url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    u.add_argument("--database", default="aquavolt")
    u.add_argument("--console-url", help=CONSOLE_HELP)
    u.set_defaults(func=_push)

    a = sub.add_parser("assets", help="write the field's asset positions to InfluxDB (overview map)")
    a.add_argument("field", help="field YAML file")
    a.add_argument("--influx", help="InfluxDB URL (default AQUAVOLT_INFLUX_URL)")
    a.set_defaults(func=_assets)

    r = sub.add_parser("render", help="static PNG of a dashboard from InfluxDB data (matplotlib)")
    r.add_argument("field", help="field YAML file")
    r.add_argument("--dashboard", default="water",
                   help="overview, water, electricity, alarms, gateways or customer")
    r.add_argument("--out", required=True, help="PNG file")
    r.add_argument("--from", dest="start", required=True, help="range start, ISO 8601")
    r.add_argument("--to", dest="end", required=True, help="range end, ISO 8601")
    r.add_argument("--influx", help="InfluxDB URL (default AQUAVOLT_INFLUX_URL)")
    r.add_argument("--max-panels", type=int, default=12)
    r.set_defaults(func=_render)
