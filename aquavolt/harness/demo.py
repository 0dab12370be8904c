"""``aquavolt demo``: the live simulated town, with a live terminal view.

Everything runs on this machine, each component its own process (:class:`Stack`): the
simulator with a day of incidents (the scenario), one edge agent per gateway, the collector
and the rules engine, on a local Mosquitto and InfluxDB. Ctrl-C stops everything cleanly and
prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aquavolt import schema
from aquavolt.clock import SimClock, parse_instant, parse_offset
from aquavolt.errors import WireError
from aquavolt.harness.judge import judge
from aquavolt.harness.liveview import LiveView
from aquavolt.harness.replay import participants, rules_reached
from aquavolt.harness.stack import Stack, StackOptions
from aquavolt.harness.timekeeper import TimeKeeper
from aquavolt.influx import Influx, InfluxError
from aquavolt.mqtt import Recorder
from aquavolt.scenario import load_scenario
from aquavolt.wire import AlarmEvent, Topics, decode


def _scenario_settings(path: Path | None) -> dict[str, Any]:
    """The scenario's start, acceleration, history_days and seed (only these keys are read
    here: the simulator plays the scenario)."""
    if path is None:
        return {}
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return {k: data[k] for k in ("start", "acceleration", "history_days", "seed") if k in data}


def run_demo(args: argparse.Namespace) -> int:
    scenario = Path(args.scenario).resolve() if args.scenario else None
    sc = _scenario_settings(scenario)
    start_text = args.start or sc.get("start") or "2026-06-01T00:00:00Z"
    if not isinstance(start_text, str):  # YAML reads an unquoted instant as a datetime
        start_text = start_text.strftime("%Y-%m-%dT%H:%M:%SZ")
    accel = args.acceleration or sc.get("acceleration") or 120.0
    backfill_days = args.backfill_days if args.backfill_days is not None else int(sc.get("history_days", 0))
    start = parse_instant(start_text)
    clock = SimClock(start, accel)
    stack = Stack(StackOptions(field=Path(args.field).resolve(), workdir=Path(args.workdir),
                               clock_spec=clock.spec(), scenario=scenario,
                               sparkplug=tuple(args.sparkplug or ())))
    say = functools.partial(print, flush=True)
    if stack.missing:
        say(f"aquavolt demo: not available, skipped: {', '.join(stack.missing)}")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    old = signal.signal(signal.SIGINT, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    view: LiveView | None = None
    rec: Recorder | None = None
    summary = ""
    verdict = ""
    try:
        stack.prepare_field()  # a --sparkplug naming no aquavolt gateway: ConfigError, one line
        stack.start_servers()
        if backfill_days and "sim" not in stack.missing and not stop:
            _backfill(stack, start_text, backfill_days, int(sc.get("seed", 1)))
        # Lockstep at most ``accel`` times the wall (a busy host slows the demo down instead
        # of changing what it shows), or --paced; simulated time starts once all are ready.
        keeper: TimeKeeper | None = None
        if args.paced:
            epoch_file = stack.workdir / "clock-epoch"
            epoch_file.unlink(missing_ok=True)
            clock = SimClock(start, accel, epoch_file=str(epoch_file))
            stack.opts.clock_spec = clock.spec()
        else:
            iso = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            stack.opts.clock_spec = f"lockstep,start={iso},run={stack.run_id}"
        if not stop:
            topics = Topics(stack.mqtt_settings().prefix)
            rec = Recorder(stack.mqtt_settings(), [topics.alarm_events, topics.progress("rules")],
                           f"demo-{stack.run_id}")
            rec.__enter__()
            stack.start_children()
            if args.paced:
                stack.release_clock(args.warmup_s)
            else:
                keeper = _keeper(stack, start, accel)
        for c in stack.children:
            say(f"aquavolt demo: started {c.name} (pid {c.proc.pid if c.proc else '?'})")
        for srv in (stack.mosquitto, stack.influxdb):
            if srv is not None:
                say(f"aquavolt demo: server {srv.name} (pid {srv.pid})")
        say(f"aquavolt demo: MQTT {stack.mqtt_url}  InfluxDB {stack.influx_url}  operator API "
            f"http://127.0.0.1:{stack.api_port}  logs {stack.workdir / 'logs'}")
        view = LiveView(stack.mqtt_settings())
        view.start()
        tty = sys.stdout.isatty() and not args.plain
        deadline = time.monotonic() + args.duration_s if args.duration_s else None
        sim_end_ms = int((start + parse_offset(args.sim_duration)) * 1000) if args.sim_duration else None
        last_plain = 0.0
        while not stop and (deadline is None or time.monotonic() < deadline):
            if sim_end_ms is not None and keeper is not None and keeper.t_ms >= sim_end_ms + GRACE_MS:
                break
            for name, rc in stack.supervise():
                say(f"aquavolt demo: {name} died (exit {rc}); restarted")
            t = keeper.t_ms / 1000 if keeper is not None else max(clock.now(), clock.start)
            now = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
            if tty:
                sys.stdout.write("\x1b[2J\x1b[H" + view.render(now) + _behind(stack) + "\n(Ctrl-C stops)\n")
                sys.stdout.flush()
            elif time.monotonic() - last_plain >= args.plain_every_s:
                last_plain = time.monotonic()
                say((view.render(now) + _behind(stack)).replace("\n", "\n  "))
            time.sleep(1.0)
        if keeper is not None:
            keeper.stop()
        if not stop and (deadline is not None or sim_end_ms is not None):  # bounded: judged
            until = sim_end_ms if sim_end_ms is not None else keeper.t_ms - GRACE_MS if keeper else None
            behind = stack.catch_up(until)
            if behind:
                say("aquavolt demo: the collector or the rules engine did not catch up: "
                    + "; ".join(f"{k}: {v}" for k, v in behind.items()))
            if scenario is not None and sim_end_ms is not None and rec is not None:
                verdict = _judge(scenario, rec, sim_end_ms, Path(args.report_dir or stack.workdir))
    finally:
        if view is not None:
            view.stop()
            summary = _summary(stack, view)
            if keeper is not None:
                st = keeper.stats
                summary += (f"\n  lockstep: {st.steps:,} instants, {st.simulated_s:,.0f} simulated s in "
                            f"{st.wall_s:,.0f} wall s ({st.ratio:,.0f}x, at most {accel:g}x)")
        if rec is not None:
            rec.__exit__(None, None, None)
        stack.stop()
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
    say(summary)
    if verdict:
        say(verdict)
    say("aquavolt demo: every process stopped")
    return 0


def _judge(scenario: Path, rec: Recorder, sim_end_ms: int, out: Path) -> str:
    """The scenario's strict judgement of what the demo annunciated, when the run covered it."""
    sc = load_scenario(scenario)
    if sim_end_ms < sc.end * 1000:
        return ("aquavolt demo: not judged: the run stopped before the scenario's end "
                f"({sc.scenario.duration})")
    topic = next(f for f in rec.filters if f.endswith("/progress/rules"))
    rec.wait_for(rules_reached(topic, int(sc.end * 1000)), 30.0)
    events = []
    for m in rec.snapshot():
        if m.topic != topic:
            with contextlib.suppress(WireError):
                events.append(decode(m.payload, AlarmEvent))
    report = judge(sc, events)
    j, x = report.write(out)
    return (f"aquavolt demo: judged against {scenario.name}\n{report.text()}\n"
            f"aquavolt demo: report: {j} and {x}")


GRACE_MS = 120_000
"""Simulated time granted past ``--sim-duration`` (as a replay's ``--grace-s``), so that the
rules engine's event-time horizon (newest event time less the allowed lateness) covers it."""
CUSTOMER_CONDITIONS = ("over_consumption", "continuous_flow")
"""Listed in the summary whatever their priority: they are what customers hear about."""

def _keeper(stack: Stack, start: float, cap: float) -> TimeKeeper:
    """Grant time in a thread for as long as the demo runs."""
    import threading

    keeper = TimeKeeper(stack.watch, stack.run_id, int(start * 1000), participants(stack), cap=cap)
    keeper.wait_ready()
    threading.Thread(target=keeper.run_until, args=(2**52,), daemon=True, name="time keeper").start()
    return keeper


def _behind(stack: Stack) -> str:
    """A line when the collector or the rules engine is behind what it received."""
    behind = {k: v for k, v in stack.backlogs().items() if v >= BEHIND_SHOWN}
    if not behind:
        return ""
    return "\nbehind: " + ", ".join(f"{k} {v:,} messages not handled yet" for k, v in behind.items())


BEHIND_SHOWN = 1000


def _backfill(stack: Stack, end: str, days: int, seed: int) -> None:
    """History from the scenario's seed: the simulator runs on it, so the meters' totalisers
    go on from the history without a jump."""
    print(f"aquavolt demo: writing {days} days of meter history (year-over-year needs it)...", flush=True)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "aquavolt.cli", "sim", "backfill", str(stack.field_path),
                           "--end", end, "--days", str(days), "--seed", str(seed)],
                          env=stack.env, check=False, stdout=subprocess.DEVNULL)
    print(f"aquavolt demo: history written in {time.monotonic() - t0:.0f} s"
          + ("" if done.returncode == 0 else f" (backfill exit {done.returncode})"), flush=True)


def _summary(stack: Stack, view: LiveView) -> str:
    influx = Influx(stack.influx_settings())
    try:
        rows = influx.rows('SELECT count("value") FROM "telemetry"')
        stored = int(rows[0]["count"]) if rows else 0
        rows = influx.rows(f'SELECT count("active") FROM "{schema.RP_EVENTS}"."{schema.ALARM_EVENT}" '
                           'WHERE "transition" = \'raised\'')
        alarm_rows = int(rows[0]["count"]) if rows else 0
    except InfluxError:
        stored = alarm_rows = -1
    raised = view.seen.raised
    by_condition: dict[str, int] = {}
    for a in raised:
        by_condition[a.condition] = by_condition.get(a.condition, 0) + 1
    lines = [
        "",
        "aquavolt demo: summary",
        f"  readings seen on MQTT: {view.seen.readings:,}; points in InfluxDB telemetry: {stored:,}",
        f"  alarm events raised in InfluxDB alarm_event: {alarm_rows:,}",
        f"  alarms raised: {len(raised)} ("
        + ", ".join(f"{c} {n}" for c, n in sorted(by_condition.items(), key=lambda kv: -kv[1])) + ")",
    ]
    # Incidents first: what an operator acts on (stale data and bad quality are counted above).
    important = [a for a in raised if (a.priority in ("critical", "high", "medium")
                 and a.condition not in ("stale", "bad_quality", "comm_fail"))
                 or a.condition in CUSTOMER_CONDITIONS]
    lines += [f"    {datetime.fromtimestamp(a.ts_ms / 1000, UTC):%Y-%m-%d %H:%M} {a.priority:<8} "
              f"{a.alarm_id}: {a.message}" for a in important[:30]]
    lines += [
        f"  SMS that would have been sent: {view.seen.sms_count()}",
        f"  data: {stack.workdir} (InfluxDB data in influxdb/, logs in logs/)",
        "  Grafana: `aquavolt dashboards build examples/demo-town.yaml --out var/dashboards`, then provision",
        "  var/dashboards with an InfluxDB datasource pointing at this InfluxDB "
        "(see dashboards/README.md), or `docker compose up` for the full control room.",
    ]
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a live simulated field (every component its own process)")
    p.add_argument("field", help="field YAML file")
    p.add_argument("--scenario", help="scenario YAML with the incidents to play")
    p.add_argument("--workdir", default="var/demo", help="where servers keep data and logs")
    p.add_argument("--sparkplug", action="append", metavar="GATEWAY",
                   help="this gateway publishes Sparkplug B instead of aquavolt's wire (repeatable): "
                   "a mixed field, the control room unchanged (docs/sparkplug.md)")
    p.add_argument("--start", default=None, help="simulated start instant (default: the scenario's)")
    p.add_argument("--acceleration", type=float, default=None,
                   help="at most this many simulated seconds per wall second (default: the scenario's)")
    p.add_argument("--paced", action="store_true",
                   help="simulated time paced by the wall clock instead of lockstep")
    p.add_argument("--warmup-s", type=float, default=3.0,
                   help="--paced: wall seconds between every process being ready and the simulated start")
    p.add_argument("--backfill-days", type=int, default=None,
                   help="days of meter history to write first (default: the scenario's history_days)")
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this many wall seconds")
    p.add_argument("--sim-duration", default=None,
                   help="lockstep: stop once this much simulated time has passed (1d2h, 90m, 3600s): "
                        "the same run on a fast or a busy machine")
    p.add_argument("--plain", action="store_true", help="plain periodic lines, no screen refresh")
    p.add_argument("--report-dir", default=None,
                   help="with --scenario and --sim-duration covering it: where the judgement of the run "
                        "is written (replay-report.json, replay-junit.xml; default: the work folder)")
    p.add_argument("--plain-every-s", type=float, default=10.0)
    p.set_defaults(func=run_demo)
