"""``aquavolt replay SCENARIO.yaml``: run a scenario end to end and judge the system.

The same separate processes as in production (simulator, one edge agent per gateway,
collector, rules engine) on a Mosquitto and InfluxDB that it starts (or is given), at the
scenario's acceleration. Every alarm transition is collected from MQTT and judged against
the scenario (simulators/judge.py); the report is printed and written as JSON and JUnit
XML. The exit status is 1 on a missed or late expected alarm, a false alarm (annunciated,
neither expected nor allowed, or forbidden) or a limit exceeded.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aquavolt.clock import SimClock
from aquavolt.errors import WireError
from aquavolt.launcher import PAUSE_MAX_S, Stack, StackOptions
from aquavolt.mqtt import Recorder
from aquavolt.wire import AlarmEvent, Topics, decode
from simulators.judge import Report, judge
from simulators.scenario import load_scenario


def _say(text: str) -> None:
    print(f"aquavolt replay: {text}", flush=True)


def replay(args: argparse.Namespace) -> tuple[Report, Path]:
    sc_path = Path(args.scenario).resolve()
    sc = load_scenario(sc_path)
    workdir = Path(args.workdir).resolve() if args.workdir else Path(
        tempfile.mkdtemp(prefix=f"aquavolt-replay-{sc_path.stem}-"))
    accel = args.acceleration or sc.scenario.acceleration
    stack = Stack(StackOptions(field=(sc_path.parent / sc.scenario.field).resolve(), workdir=workdir,
                               clock_spec="", scenario=sc_path, mqtt_url=args.mqtt,
                               influx_url=args.influx))
    if stack.missing:
        raise SystemExit(f"aquavolt replay: components missing: {', '.join(stack.missing)}")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    old = signal.signal(signal.SIGINT, _stop)
    try:
        stack.start_servers()
        stack.prepare_field()
        backfill_days = sc.scenario.history_days if args.backfill_days is None else args.backfill_days
        if backfill_days:
            _say(f"writing {backfill_days} days of meter history")
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "aquavolt.cli", "sim", "backfill", str(stack.field_path),
                            "--end", sc.scenario.start, "--days", str(backfill_days),
                            "--seed", str(sc.scenario.seed)],
                           env=stack.env, check=True, stdout=subprocess.DEVNULL)
            _say(f"history written in {time.monotonic() - t0:.1f} s")
        (workdir / "clock-epoch").unlink(missing_ok=True)  # a work folder used before
        clock = SimClock(sc.start, accel, epoch_file=str(workdir / "clock-epoch"))
        stack.opts.clock_spec = clock.spec()
        topics = Topics(stack.mqtt_settings().prefix)
        with Recorder(stack.mqtt_settings(), [topics.alarm_events], f"replay-{workdir.name}") as rec:
            t0 = time.monotonic()
            stack.start_children()
            stack.release_clock(args.warmup_s)
            _say(f"{sc_path.name}: {sc.scenario.start} for {sc.scenario.duration} at {accel:g}x "
                 f"(about {(sc.end - sc.start) / accel + args.warmup_s:.0f} s after a start of "
                 f"{time.monotonic() - t0:.0f} s); work folder {workdir}")
            end = sc.end + args.grace_s
            while not stop and clock.now() < end:
                for name, rc in stack.supervise():
                    _say(f"{name} died (exit {rc}); restarted")
                time.sleep(0.5)
            if not stop:  # judge what was received: a busy host may leave the engine behind
                behind = stack.settle()
                if behind:
                    _say(f"still behind after freezing the field for {PAUSE_MAX_S:g} s: " + ", ".join(
                        f"{k} {v:,} messages" for k, v in behind.items())
                        + " (the host is too busy for this acceleration)")
            events = []
            for m in rec.snapshot():
                try:
                    events.append(decode(m.payload, AlarmEvent))
                except WireError as exc:
                    _say(f"ignored a bad alarm event: {exc}")
    finally:
        stack.stop()
        signal.signal(signal.SIGINT, old)
    report = judge(sc, events)
    return report, workdir


def run_replay(args: argparse.Namespace) -> int:
    report, workdir = replay(args)
    out = Path(args.report_dir) if args.report_dir else workdir
    j, x = report.write(out)
    print(report.text())
    _say(f"report: {j} and {x}")
    return 0 if report.passed else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("replay", help="run a scenario end to end and judge the alarms")
    p.add_argument("scenario", help="scenario YAML (see simulators/README.md)")
    p.add_argument("--workdir", help="servers' data and logs (default: a new temporary folder)")
    p.add_argument("--report-dir", help="where to write the JSON and JUnit reports (default workdir)")
    p.add_argument("--mqtt", help="use this broker instead of starting one")
    p.add_argument("--influx", help="use this InfluxDB instead of starting one")
    p.add_argument("--acceleration", type=float, help="override the scenario's acceleration")
    p.add_argument("--warmup-s", type=float, default=3.0,
                   help="wall seconds between every process being connected and the simulated start")
    p.add_argument("--grace-s", type=float, default=120.0, help="simulated seconds after the end")
    p.add_argument("--backfill-days", type=int, default=None,
                   help="days of meter history to write first (default: the scenario's history_days)")
    p.set_defaults(func=run_replay)
