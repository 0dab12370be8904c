"""node-opcua's server (npm, an OPC-UA stack independent of asyncua) as a test peer: a Node.js
process (tests/opcua/node/server.js) serving OPC-UA devices from their profiles with the
endpoint path, namespace URI, node ids and data types the edge reads (those of
:class:`opcua_peer.OpcuaPeer`). Security None only.

Needs Node.js and ``npm ci --prefix tests/opcua/node`` (``./run setup`` does it): without
either, starting the peer fails the test with that advice, it never skips.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import sample_raw

from aquavolt.profiles import OpcuaProfile

NODE_DIR = Path(__file__).resolve().parents[1] / "opcua" / "node"
SERVER_JS = NODE_DIR / "server.js"


def node_spec(devices: list[tuple[str, OpcuaProfile]], salt: int = 0, uri: str = "urn:aquavolt:sim",
              path: str = "/aquavolt/rtu") -> dict[str, Any]:
    """What server.js serves: every point of every (node prefix, profile) with its sample value."""
    variables = []
    for prefix, profile in devices:
        for p in profile.points:
            raw = sample_raw(p, salt)
            variables.append({"node": f"{prefix}.{p.node}", "type": p.type, "writable": p.writable,
                              "value": str(raw) if p.type == "int64" else raw})
    return {"path": path, "namespace": uri, "variables": variables}


class NodeOpcuaPeer:
    """One server.js process at a time on ``port``; ``start`` returns once it printed ready,
    ``ready_at`` (time.monotonic())."""

    def __init__(self, devices: list[tuple[str, OpcuaProfile]], port: int, workdir: Path, salt: int = 0,
                 start_timeout_s: float = 60.0) -> None:
        self.devices = devices
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/aquavolt/rtu"
        self.workdir = workdir
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_at = 0.0
        self.start(salt)

    def start(self, salt: int = 0) -> None:
        """Start a server serving the sample values of ``salt``; returns once it listens."""
        self.prepare(salt)
        self.listen()

    def prepare(self, salt: int = 0) -> None:
        """Start a server process that loads its address space and waits before listening
        (a restart then costs the clients no start-up time): ``listen`` opens it."""
        node = shutil.which("node")
        assert node is not None, "node is not installed (Node.js 20 is a requirement of the test suite: ./run setup)"
        assert (NODE_DIR / "node_modules" / "node-opcua-server").is_dir(), \
            "node-opcua-server is not installed: run ./run setup (npm ci --prefix tests/opcua/node)"
        assert self.proc is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        err = (self.workdir / "node-opcua.log").open("ab")
        proc = subprocess.Popen([node, str(SERVER_JS), str(self.port), str(self.workdir / "pki"), "--wait"],
                                cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        err.close()
        self.proc = proc
        self._say(json.dumps(node_spec(self.devices, salt)))
        self._expect(b"prepared")

    def listen(self) -> None:
        self._say("listen")
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        self._expect(b"ready")
        self.ready_at = time.monotonic()

    def _say(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def _expect(self, word: bytes) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        out = b""
        while word not in out:
            left = deadline - time.monotonic()
            if proc.poll() is not None or left <= 0:
                self.close()
                raise AssertionError(f"node-opcua server: no {word.decode()!r} (exit {proc.returncode}): "
                                     + (self.workdir / "node-opcua.log").read_text(errors="replace")[-2000:])
            readable, _, _ = select.select([proc.stdout], [], [], left)
            if readable:
                out += os.read(proc.stdout.fileno(), 4096)

    def stop(self) -> int:
        """SIGTERM to the server's PID; returns its exit status."""
        proc, self.proc = self.proc, None
        assert proc is not None, "not running"
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(10)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
