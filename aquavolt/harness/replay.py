"""``aquavolt replay SCENARIO.yaml``: run a scenario end to end and judge the system.

The same separate processes as in production (simulator, one edge agent per gateway,
collector, rules engine) on a Mosquitto and InfluxDB that it starts (or is given). By
default in lockstep (:mod:`aquavolt.lockstep`): simulated time advances only when the
simulator and every edge agent are done with the current instant, as fast as the slowest of
them allows (``--acceleration`` caps the pace), so a loaded machine gives the same alarms as
an idle one. ``--paced`` runs the wall-paced clock instead, at the scenario's acceleration.
Every alarm transition is collected from MQTT and compared with the scenario's
expectations (harness/judge.py); the report is printed and written as JSON and JUnit
XML. The exit status is 1 on a missed or late expected alarm, a false alarm (annunciated,
neither expected nor allowed, or forbidden) or a limit exceeded.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aquavolt.clock import SimClock
from aquavolt.errors import WireError
from aquavolt.harness.judge import Report, judge
from aquavolt.harness.stack import Stack, StackOptions
from aquavolt.harness.timekeeper import TimeKeeper
from aquavolt.mqtt import Message, Recorder
from aquavolt.progressbar import ProgressBar, add_progress_option, sim_time
from aquavolt.scenario import load_scenario
from aquavolt.wire import AlarmEvent, Progress, TimeStage, Topics, decode


def _say(text: str) -> None:
    print(f"aquavolt replay: {text}", flush=True)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def participants(stack: Stack) -> dict[str, TimeStage]:
    """The children that take part in lockstep time advance, by stage."""
    out = {}
    for c in stack.children:
        if c.name == "sim":
            out[c.component] = TimeStage.FIELD
        elif c.name.startswith("edge:"):
            out[c.component] = TimeStage.EDGE
    return out


def rules_reached(topic: str, until_ms: int) -> Any:
    """A predicate on a record: the rules engine says it has handled event time ``until_ms``
    (its alarm events before that progress came on the same connection: all recorded)."""

    def ok(msgs: list[Message]) -> bool:
        for m in reversed(msgs):
            if m.topic == topic:
                try:
                    p = decode(m.payload, Progress)
                except WireError:
                    continue
                return p.event_ms is not None and p.event_ms >= until_ms
        return False

    return ok


def sim_bar(start: float, until: float, enabled: bool) -> ProgressBar:
    """Simulated time done of the run, its pace against the wall and the wall time left."""
    return ProgressBar("aquavolt replay", until - start, enabled=enabled, fmt=sim_time, rate_unit="x")


def run_lockstep(stack: Stack, rec: Recorder, start: float, until: float, cap: float | None,
                 stop: threading.Event, progress: bool = True) -> TimeKeeper:
    keeper = TimeKeeper(stack.watch, stack.run_id, int(start * 1000), participants(stack), cap=cap)
    keeper.wait_ready()
    worker = threading.Thread(target=keeper.run_until, args=(int(until * 1000),), daemon=True)
    worker.start()
    with sim_bar(start, until, progress) as bar:
        while worker.is_alive():
            if stop.is_set():
                keeper.stop()
            for name, rc in stack.supervise():
                _say(f"{name} died (exit {rc}); restarted")
            bar.update(keeper.t_ms / 1000 - start)
            worker.join(0.25)
        bar.update(keeper.t_ms / 1000 - start)
    return keeper


def replay(args: argparse.Namespace) -> tuple[Report, Path]:
    sc_path = Path(args.scenario).resolve()
    sc = load_scenario(sc_path)
    workdir = Path(args.workdir).resolve() if args.workdir else Path(
        tempfile.mkdtemp(prefix=f"aquavolt-replay-{sc_path.stem}-"))
    run_id = f"{sc_path.stem}-{uuid.uuid4().hex[:8]}"[:64]
    stack = Stack(StackOptions(field=(sc_path.parent / sc.scenario.field).resolve(), workdir=workdir,
                               clock_spec="", scenario=sc_path, mqtt_url=args.mqtt,
                               influx_url=args.influx, run_id=run_id,
                               sparkplug=tuple(args.sparkplug or ())))
    if stack.missing:
        raise SystemExit(f"aquavolt replay: components missing: {', '.join(stack.missing)}")
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    old_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stopped cleanly too
    end = sc.end + args.grace_s
    progress = getattr(args, "progress", True)
    try:
        stack.prepare_field()  # a --sparkplug naming no aquavolt gateway: ConfigError, one line
        stack.start_servers()
        backfill_days = sc.scenario.history_days if args.backfill_days is None else args.backfill_days
        if backfill_days:
            _say(f"writing {backfill_days} days of meter history")
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "aquavolt.cli", "sim", "backfill", str(stack.field_path),
                            "--end", sc.scenario.start, "--days", str(backfill_days),
                            "--seed", str(sc.scenario.seed)] + ([] if progress else ["--no-progress"]),
                           env=stack.env, check=True, stdout=subprocess.DEVNULL)
            _say(f"history written in {time.monotonic() - t0:.1f} s")
        topics = Topics(stack.mqtt_settings().prefix)
        if args.paced:
            accel = args.acceleration or sc.scenario.acceleration
            (workdir / "clock-epoch").unlink(missing_ok=True)  # a work folder used before
            clock = SimClock(sc.start, accel, epoch_file=str(workdir / "clock-epoch"))
            stack.opts.clock_spec = clock.spec()
        else:
            stack.opts.clock_spec = f"lockstep,start={_iso(sc.start)},run={run_id}"
        filters = [topics.alarm_events, topics.progress("rules")]
        with Recorder(stack.mqtt_settings(), filters, f"replay-{run_id}") as rec:
            t0 = time.monotonic()
            stack.start_children()
            started_s = time.monotonic() - t0
            if args.paced:
                stack.release_clock(args.warmup_s)
                _say(f"{sc_path.name}: {sc.scenario.start} for {sc.scenario.duration}, paced at "
                     f"{accel:g}x after a start of {started_s:.0f} s; work folder {workdir}")
                with sim_bar(sc.start, end, progress) as bar:
                    while not stop.is_set() and clock.now() < end:
                        for name, rc in stack.supervise():
                            _say(f"{name} died (exit {rc}); restarted")
                        bar.update(clock.now() - sc.start)
                        time.sleep(0.25)
                    bar.update(clock.now() - sc.start)
            else:
                cap = args.acceleration
                _say(f"{sc_path.name}: {sc.scenario.start} for {sc.scenario.duration} in lockstep"
                     + (f", at most {cap:g}x" if cap else "") + f" after a start of {started_s:.0f} s; "
                     f"work folder {workdir}")
                keeper = run_lockstep(stack, rec, sc.start, end, cap, stop, progress)
                st = keeper.stats
                _say(f"lockstep: {st.steps:,} instants, {st.simulated_s:,.0f} simulated s in "
                     f"{st.wall_s:.1f} wall s: {st.ratio:,.0f}x; field stepped at {st.field_steps:,}; "
                     "busy: " + ", ".join(
                         f"{n} {v:.1f} s" for n, v in sorted(st.busy_s.items(), key=lambda kv: -kv[1])))
            if not stop.is_set():  # judge what was sent: the consumers handle what they received
                behind = stack.catch_up(int(sc.end * 1000))
                if behind:
                    _say("the collector or the rules engine did not catch up: " + "; ".join(
                        f"{k}: {v}" for k, v in behind.items()))
                rec.wait_for(rules_reached(topics.progress("rules"), int(sc.end * 1000)), 30.0)
            events = []
            for m in rec.snapshot():
                if m.topic != topics.alarm_events:
                    continue
                try:
                    events.append(decode(m.payload, AlarmEvent))
                except WireError as exc:
                    _say(f"ignored a bad alarm event: {exc}")
    finally:
        stack.stop()
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
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
    p.add_argument("--sparkplug", action="append", metavar="GATEWAY",
                   help="this gateway publishes Sparkplug B instead of aquavolt's wire (repeatable): "
                   "the same scenario judged on a mixed field (docs/sparkplug.md)")
    p.add_argument("--report-dir", help="where to write the JSON and JUnit reports (default workdir)")
    p.add_argument("--mqtt", help="use this broker instead of starting one")
    p.add_argument("--influx", help="use this InfluxDB instead of starting one")
    p.add_argument("--acceleration", type=float,
                   help="lockstep: at most this many simulated seconds per wall second (default: "
                        "as fast as the slowest participant); --paced: the clock's acceleration "
                        "(default: the scenario's)")
    p.add_argument("--paced", action="store_true",
                   help="simulated time paced by the wall clock instead of lockstep")
    p.add_argument("--warmup-s", type=float, default=3.0,
                   help="--paced: wall seconds between every process being ready and the simulated start")
    p.add_argument("--grace-s", type=float, default=120.0, help="simulated seconds after the end")
    p.add_argument("--backfill-days", type=int, default=None,
                   help="days of meter history to write first (default: the scenario's history_days)")
    add_progress_option(p)
    p.set_defaults(func=run_replay)
