"""The centre against a third-party Sparkplug B edge node: Eclipse Tahu's ``sparkplug-client``
(npm, ``node/``) run by Node as its own process on the real Mosquitto, with aquavolt's
collector and rules engine as their own processes.

Node and the npm packages are required: ``./run setup`` installs them (``npm ci --prefix
tests/sparkplug/node``). A missing one fails the tests, it never skips them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import Mosquitto, free_port

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
NODE_DIR = HERE / "node"
NODE_ID = "PLC-7"


def _require_node() -> str:
    node = shutil.which("node")
    assert node, "Node.js is required for the Sparkplug interoperability tests (./run setup)"
    assert (NODE_DIR / "node_modules" / "sparkplug-client").is_dir(), (
        f"npm package sparkplug-client missing: run ./run setup (npm ci --prefix {NODE_DIR})")
    return node


class TahuNode:
    """``node edge-node.js``: JSON commands in on stdin, JSON events out on stdout."""

    def __init__(self, url: str, group: str, log: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self._log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([_require_node(), str(NODE_DIR / "edge-node.js"), url, group, NODE_ID],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=NODE_DIR)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            self._new.put(ev)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, event: str, timeout_s: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next event of that name (and those fields) from now on."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                ev = self._new.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"edge node: no {event} event in {timeout_s} s; saw {self.events}") from None
            if ev.get("event") == "error":
                raise AssertionError(f"edge node: {ev}")
            if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                return ev

    def kill(self) -> None:
        """Gone without a word: the broker publishes its will (NDEATH)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def close(self) -> None:
        self.kill()
        self._reader.join(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self._log.close()


class Proc:
    """A component as its own process (``python -m aquavolt.cli ...``), known by its PID."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "aquavolt.cli", *argv], stdout=f,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                         env={**os.environ, **(env or {})}, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Centre:
    """What the tests start: a field file of their own, the edge node, the components."""

    def __init__(self, tmp: Path, mosquitto: Mosquitto, prefix: str) -> None:
        self.tmp, self.mosquitto, self.prefix = tmp, mosquitto, prefix
        self.group = f"Plant-{uuid.uuid4().hex[:8]}"  # a group of this test's own
        self.host_id = f"aquavolt-{uuid.uuid4().hex[:8]}"
        self.field = tmp / "field.yaml"
        self.field.write_text((HERE / "field.yaml").read_text().replace("group_id: Plant1",
                                                                          f"group_id: {self.group}"))
        self.url = f"{mosquitto.url()}?prefix={prefix}"
        self.procs: list[Proc] = []
        self.nodes: list[TahuNode] = []

    def node(self) -> TahuNode:
        n = TahuNode(f"mqtt://127.0.0.1:{self.mosquitto.port}", self.group, self.tmp / "node.log")
        self.nodes.append(n)
        return n

    def collector(self, influx_url: str) -> tuple[Proc, int]:
        port = free_port()
        p = Proc(["collector", "run", "--mqtt", self.url, "--influx", influx_url, "--state-dir",
                  str(self.tmp / "collector"), "--metrics-port", str(port), "--field", str(self.field),
                  "--sparkplug-host-id", self.host_id, "--flush-interval-ms", "20"],
                 self.tmp / "collector.log")
        self.procs.append(p)
        return p, port

    def rules(self) -> tuple[Proc, int]:
        port = free_port()
        p = Proc(["rules", "run", str(self.field), "--state-dir", str(self.tmp / "rules"), "--mqtt", self.url,
                  "--api-port", str(port), "--tick-ms", "0"], self.tmp / "rules.log",
                 env={"AQUAVOLT_CLOCK": "real"})
        self.procs.append(p)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert p.proc.poll() is None, p.log()[-3000:]
            try:
                if http_json(f"http://127.0.0.1:{port}/health")["mqtt_connected"]:
                    return p, port
            except (OSError, urllib.error.URLError, KeyError):
                pass
            time.sleep(0.05)
        raise AssertionError("rules engine did not start:\n" + p.log()[-3000:])

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        for p in self.procs:
            p.stop()


@pytest.fixture
def centre(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> Iterator[Centre]:
    _require_node()
    c = Centre(tmp_path, mosquitto, topic_prefix)
    yield c
    c.close()
