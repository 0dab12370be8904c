"""``aquavolt demo``: the live simulated town, with a live terminal view.

Everything runs on this machine, each component its own process (:class:`Stack`): the
simulator with a day of incidents (the scenario), one edge agent per gateway, the collector
and the rules engine, on a local Mosquitto and InfluxDB. Ctrl-C stops everything cleanly and
prints a summary.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aquavolt.clock import SimClock, parse_instant
from aquavolt.influx import Influx, InfluxError
from aquavolt.launcher import Stack, StackOptions
from aquavolt.liveview import LiveView


def _scenario_clock(path: Path | None) -> tuple[str | None, float | None]:
    if path is None:
        return None, None
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return data.get("start"), data.get("acceleration")


def run_demo(args: argparse.Namespace) -> int:
    scenario = Path(args.scenario).resolve() if args.scenario else None
    sc_start, sc_accel = _scenario_clock(scenario)
    start_text = args.start or sc_start or "2026-06-01T00:00:00Z"
    accel = args.acceleration or sc_accel or 120.0
    clock = SimClock(parse_instant(start_text), accel)
    stack = Stack(StackOptions(field=Path(args.field).resolve(), workdir=Path(args.workdir),
                               clock_spec=clock.spec(), scenario=scenario))
    say = print
    if stack.missing:
        say(f"aquavolt demo: not available, skipped: {', '.join(stack.missing)}")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    old = signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stack.start_servers()
    stack.prepare_field()
    if args.backfill_days and "sim" not in stack.missing:
        say(f"aquavolt demo: writing {args.backfill_days} days of meter history (year-over-year needs it)...")
        subprocess.run([sys.executable, "-m", "aquavolt.cli", "sim", "backfill", str(stack.field_path),
                        "--end", start_text, "--days", str(args.backfill_days)],
                       env=stack.env, check=False, stdout=subprocess.DEVNULL)
    # Simulated time starts once every process had time to start (the clock is shared).
    clock = SimClock(clock.start, accel, epoch=time.time() + args.warmup_s)
    stack.opts.clock_spec = clock.spec()
    stack.start_children()
    for c in stack.children:
        say(f"aquavolt demo: started {c.name} (pid {c.proc.pid if c.proc else '?'})")
    say(f"aquavolt demo: MQTT {stack.mqtt_url}  InfluxDB {stack.influx_url}  operator API "
        f"http://127.0.0.1:{stack.api_port}  logs {stack.workdir / 'logs'}")
    view = LiveView(stack.mqtt_settings())
    view.start()
    tty = sys.stdout.isatty() and not args.plain
    deadline = time.monotonic() + args.duration_s if args.duration_s else None
    last_plain = 0.0
    try:
        while not stop and (deadline is None or time.monotonic() < deadline):
            for name, rc in stack.supervise():
                say(f"aquavolt demo: {name} died (exit {rc}); restarted")
            now = datetime.fromtimestamp(max(clock.now(), clock.start), UTC).strftime("%Y-%m-%d %H:%M")
            if tty:
                sys.stdout.write("\x1b[2J\x1b[H" + view.render(now) + "\n(Ctrl-C stops)\n")
                sys.stdout.flush()
            elif time.monotonic() - last_plain >= args.plain_every_s:
                last_plain = time.monotonic()
                say(view.render(now).replace("\n", "\n  "))
            time.sleep(1.0)
    finally:
        view.stop()
        summary = _summary(stack, view)
        stack.stop()
        signal.signal(signal.SIGINT, old)
    say(summary)
    return 0


def _summary(stack: Stack, view: LiveView) -> str:
    try:
        rows = Influx(stack.influx_settings()).rows('SELECT count("value") FROM "telemetry"')
        stored = int(rows[0]["count"]) if rows else 0
    except InfluxError as exc:
        stored = -1
        _ = exc
    raised = view.seen.raised
    lines = [
        "",
        "aquavolt demo: summary",
        f"  readings seen on MQTT: {view.seen.readings:,}; points in InfluxDB telemetry: {stored:,}",
        f"  alarms raised: {len(raised)}",
    ]
    lines += [f"    {datetime.fromtimestamp(a.ts_ms / 1000, UTC):%Y-%m-%d %H:%M} {a.priority:<8} "
              f"{a.alarm_id}: {a.message}" for a in raised[:30]]
    lines += [
        f"  SMS that would have been sent: {len(view.seen.sms)}",
        f"  data: {stack.workdir} (InfluxDB data in influxdb/, logs in logs/)",
        "  Grafana: `aquavolt dashboards build examples/demo-town.yaml --out var/dashboards`, then provision",
        "  var/dashboards with an InfluxDB datasource pointing at this InfluxDB "
        "(see dashboards/README.md), or `docker compose up` for the full control room.",
    ]
    return "\n".join(lines)


def register_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a live simulated field (every component its own process)")
    p.add_argument("field", help="field YAML file")
    p.add_argument("--scenario", help="scenario YAML with the incidents to play")
    p.add_argument("--workdir", default="var/demo", help="where servers keep data and logs")
    p.add_argument("--start", default=None, help="simulated start instant (default: the scenario's)")
    p.add_argument("--acceleration", type=float, default=None, help="simulated seconds per second")
    p.add_argument("--warmup-s", type=float, default=15.0, help="wall seconds before simulated start")
    p.add_argument("--backfill-days", type=int, default=0, help="days of history to write first")
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("--plain", action="store_true", help="plain periodic lines, no screen refresh")
    p.add_argument("--plain-every-s", type=float, default=10.0)
    p.set_defaults(func=run_demo)
