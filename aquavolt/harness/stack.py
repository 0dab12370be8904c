"""Run a whole field, every component its own process: the demo and replays stand on it.

:class:`Stack` starts a local Mosquitto and InfluxDB under a work folder (or uses the ones
it is given), copies the field onto free ports, then starts the simulator, one edge agent
per gateway, the collector and the rules engine as ``aquavolt <component> ...`` processes,
all on one simulated clock. Components that are not installed are named and skipped. A
process that dies is reported and restarted. The harness imports no component: it only
runs their commands.

Readiness and progress come over MQTT (``{prefix}/progress/{component}``, read by a
:class:`~harness.timekeeper.Watch`), never from log files. In a lockstep run
(``clock_spec`` ``lockstep,...``) the simulator and the edge agents take part in time advance
(:mod:`aquavolt.lockstep`); the caller runs the :class:`~harness.timekeeper.TimeKeeper`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO

from aquavolt.clock import SimClock, clock_from_spec, write_epoch_file
from aquavolt.config import load_field
from aquavolt.errors import ServiceError
from aquavolt.harness.relocate import relocate_file
from aquavolt.harness.servers import InfluxDB, Mosquitto, die_with_parent, free_port
from aquavolt.harness.timekeeper import Watch
from aquavolt.settings import InfluxSettings, MqttSettings

COMPONENTS = ("sim", "edge", "collector", "rules")
CATCH_UP_S = 120.0
"""Longest wait, at the end of a bounded run, for the collector and the rules engine to
handle what they received."""


def _get(url: str) -> bytes | None:
    """The body of a GET on a local endpoint, None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


def _iso(ms: int | None) -> str:
    return "none" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def available_components() -> dict[str, str | None]:
    """Component name -> None when it loads, else why it does not."""
    out: dict[str, str | None] = {}
    for ep in entry_points(group="aquavolt.commands"):
        try:
            ep.load()
            out[ep.name] = None
        except ImportError as exc:
            out[ep.name] = str(exc)
    return out


@dataclass
class Child:
    """A component process this stack started, known by its PID."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent)  # noqa: PLW1509 - only prctl runs there

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def component(self) -> str:
        """The name it publishes its progress under (``edge:gw-1`` -> ``edge-gw-1``)."""
        return self.name.replace(":", "-")

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()
            self.log = None


@dataclass
class StackOptions:
    field: Path
    workdir: Path
    clock_spec: str
    scenario: Path | None = None
    mqtt_url: str | None = None
    influx_url: str | None = None
    database: str = "aquavolt"
    components: tuple[str, ...] = COMPONENTS
    run_id: str | None = None
    """Names the run in lockstep grants (default: a new id)."""
    sparkplug: tuple[str, ...] = ()
    """Gateways that speak Sparkplug B northbound in this run (a mixed field)."""
    extra_args: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """More arguments per component (``sim``, ``edge``, ``collector``, ``rules``), appended to
    its command line, e.g. ``{"rules": ["--tokens", "operators.yaml"]}``."""


class Stack:
    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.workdir = opts.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mosquitto: Mosquitto | None = None
        self.influxdb: InfluxDB | None = None
        self.children: list[Child] = []
        self.field_path = self.workdir / "field.yaml"
        self.api_port = free_port()
        self.sim_http_port = free_port()
        self.metrics_port = free_port()
        self._watch: Watch | None = None
        self.run_id = opts.run_id or f"run-{uuid.uuid4().hex[:10]}"
        self.have = available_components()
        self.missing = [c for c in opts.components if self.have.get(c, "not installed")]

    @property
    def watch(self) -> Watch:
        """Readiness and progress of the children, from MQTT (started on first use)."""
        if self._watch is None:
            self._watch = Watch(self.mqtt_settings(), f"aquavolt-harness-{self.run_id}"[:100],
                                run=self.run_id)
            self._watch.start()
        return self._watch

    @watch.setter
    def watch(self, value: Watch) -> None:
        self._watch = value

    @property
    def mqtt_url(self) -> str:
        if self.opts.mqtt_url:
            return self.opts.mqtt_url
        assert self.mosquitto is not None
        return self.mosquitto.url()

    @property
    def influx_url(self) -> str:
        if self.opts.influx_url:
            return self.opts.influx_url
        assert self.influxdb is not None
        return f"{self.influxdb.url}/{self.opts.database}"

    def mqtt_settings(self) -> MqttSettings:
        return MqttSettings.from_url(self.mqtt_url)

    def influx_settings(self) -> InfluxSettings:
        return InfluxSettings.from_url(self.influx_url)

    @property
    def env(self) -> dict[str, str]:
        # a simulated field's customers are made up: customer SMS are composed, never sent
        return {**os.environ, "AQUAVOLT_MQTT_URL": self.mqtt_url,
                "AQUAVOLT_INFLUX_URL": self.influx_url, "AQUAVOLT_CLOCK": self.opts.clock_spec,
                "AQUAVOLT_SMS_URL": "dry-run"}

    def start_servers(self) -> None:
        if not self.opts.mqtt_url:
            self.mosquitto = Mosquitto(self.workdir / "mosquitto")
            self.mosquitto.start()
        if not self.opts.influx_url:
            self.influxdb = InfluxDB(self.workdir / "influxdb")
            self.influxdb.start()
        _ = self.watch  # subscribed before any child starts

    def prepare_field(self) -> Path:
        relocate_file(self.opts.field, self.field_path, self.workdir / "serial", self.opts.sparkplug)
        return self.field_path

    def plan(self) -> list[Child]:
        loaded = load_field(self.field_path)
        exe = [sys.executable, "-m", "aquavolt.cli"]
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        f = str(self.field_path)
        out: list[Child] = []
        if "sim" not in self.missing and "sim" in self.opts.components:
            argv = [*exe, "sim", "run", f, "--state-dir", str(self.workdir / "sim"),
                    "--http-port", str(self.sim_http_port)]
            if self.opts.scenario:
                argv += ["--scenario", str(self.opts.scenario)]
            out.append(Child("sim", argv, logs / "sim.log"))
        if "edge" not in self.missing and "edge" in self.opts.components:
            for gw in loaded.field.gateways:
                out.append(Child(f"edge:{gw.id}", [
                    *exe, "edge", "run", f, "--gateway", gw.id,
                    "--state-dir", str(self.workdir / "edge" / gw.id)], logs / f"edge-{gw.id}.log"))
        if "collector" not in self.missing and "collector" in self.opts.components:
            argv = [*exe, "collector", "run", "--state-dir", str(self.workdir / "collector"),
                    "--metrics-port", str(self.metrics_port), "--field", f]
            if self.opts.clock_spec not in ("", "real"):
                # simulated timestamps: the wall-clock continuous queries never see them
                argv.append("--event-time-rollups")
            out.append(Child("collector", argv, logs / "collector.log"))
        if "rules" not in self.missing and "rules" in self.opts.components:
            out.append(Child("rules", [
                *exe, "rules", "run", f, "--state-dir", str(self.workdir / "rules"),
                "--api-port", str(self.api_port)], logs / "rules.log"))
        for c in out:
            c.argv += self.opts.extra_args.get(c.name.split(":", 1)[0], [])
        return out

    def start_children(self, ready_timeout_s: float = 90.0) -> None:
        """Start the simulator first and wait until it says (on MQTT) that it serves, then
        everything else."""
        self.children = self.plan()
        env = self.env
        sim = next((c for c in self.children if c.name == "sim"), None)
        if sim is not None:
            sim.start(env)
            self.wait_ready([sim], ready_timeout_s)
        for c in self.children:
            if c is not sim:
                c.start(env)

    @property
    def lockstep(self) -> bool:
        return self.opts.clock_spec.startswith("lockstep")

    def wait_ready(self, children: list[Child] | None = None, timeout_s: float = 90.0) -> None:
        """Wait until every child (default: all) has said on MQTT that it is ready; a child
        that exits meanwhile is an error."""
        waiting = list(self.children if children is None else children)
        names = [c.component for c in waiting]

        def ready() -> bool:
            for c in waiting:
                if not c.alive:
                    raise ServiceError(f"{c.name} exited at start: see {c.log_path}")
            return not self.watch.ready(names)

        if not self.watch.wait(ready, timeout_s):
            late = self.watch.ready(names)
            raise ServiceError(f"not ready after {timeout_s:.0f} s: {', '.join(late)} "
                               f"(see {self.workdir / 'logs'})")

    def release_clock(self, settle_s: float, timeout_s: float = 90.0) -> float:
        """Paced clock on an epoch file: start simulated time ``settle_s`` wall seconds after
        every child said it is ready; return the epoch. (On a loaded machine the processes
        take tens of seconds to start: the run loses none of its simulated time to that.)"""
        clock = None if self.lockstep else clock_from_spec(self.opts.clock_spec)
        if not isinstance(clock, SimClock) or clock.epoch_file is None:
            return clock.epoch if isinstance(clock, SimClock) else time.time()
        self.wait_ready(timeout_s=timeout_s)
        epoch = time.time() + settle_s
        write_epoch_file(clock.epoch_file, epoch)
        return epoch

    def start(self) -> None:
        self.start_servers()
        self.prepare_field()
        self.start_children()

    def supervise(self) -> list[tuple[str, int]]:
        """Restart every child that died (return (name, exit code) of each restarted one)."""
        died = []
        env = self.env
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None:
                died.append((c.name, c.proc.returncode))
                c.stop()
                c.restarts += 1
                c.start(env)
        return died

    def backlogs(self) -> dict[str, int]:
        """Messages received and not yet handled, per consumer that answers (the rules
        engine's ``/health``, the collector's ``/metrics``)."""
        out: dict[str, int] = {}
        names = {c.name for c in self.children}
        if "rules" in names:
            body = _get(f"http://127.0.0.1:{self.api_port}/health")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out["rules"] = int(json.loads(body)["backlog_messages"]) if body else -1
        if "collector" in names:
            body = _get(f"http://127.0.0.1:{self.metrics_port}/metrics")
            for line in (body or b"").decode().splitlines():
                if line.startswith("aquavolt_collector_backlog_messages "):
                    out["collector"] = int(float(line.split()[1]))
        return {k: v for k, v in out.items() if v >= 0}

    def catch_up(self, until_ms: int | None = None, timeout_s: float = CATCH_UP_S) -> dict[str, str]:
        """At the end of a bounded run: wait until the collector and the rules engine have
        handled what they received (their progress on MQTT: event time at least
        ``until_ms`` when given, else nothing left in their backlog), at most ``timeout_s``.
        Returns, per consumer still behind, how far it got (empty when every one caught up)."""
        names = [c for c in ("collector", "rules") if any(ch.name == c for ch in self.children)]

        def behind() -> dict[str, str]:
            out = {}
            for n in names:
                p = self.watch.progress.get(n)
                if p is None:
                    out[n] = "no progress reported"
                elif until_ms is not None and (p.event_ms or 0) < until_ms:
                    out[n] = f"event time {_iso(p.event_ms)}, {p.backlog:,} messages waiting"
                elif until_ms is None and p.backlog > 0:
                    out[n] = f"{p.backlog:,} messages waiting"
            return out

        self.watch.wait(lambda: not behind(), timeout_s)
        return behind()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every child at once (SIGTERM, SIGKILL after ``timeout_s``), then the servers."""
        for c in self.children:
            c.terminate()
        deadline = time.monotonic() + timeout_s
        for c in reversed(self.children):
            c.stop(max(0.1, deadline - time.monotonic()))
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self.influxdb is not None:
            self.influxdb.stop()
        if self.mosquitto is not None:
            self.mosquitto.stop()
