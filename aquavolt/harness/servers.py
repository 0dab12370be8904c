"""Local Mosquitto and InfluxDB servers, started from Debian's packages on free ports.

Tests, the demo and ``aquavolt replay`` use these to run real servers under a folder of
their own, on 127.0.0.1 only. Each server can be stopped, killed, paused and restarted
on the same port and data folder (fault tests need that).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from aquavolt.errors import ServiceError
from aquavolt.harness.pki import CertFiles, make_ca, make_cert
from aquavolt.settings import InfluxSettings, MqttSettings
from aquavolt.wire import MAX_PAYLOAD_BYTES


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cast(Callable[..., int], libc.prctl)
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for the servers and components we start: on Linux the child gets
    SIGTERM when the process that started it dies, even by SIGKILL, so that a killed
    replay or test run leaves no server behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


_SPAWNER: concurrent.futures.ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def popen_dying_with_us(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` of a child that dies with this process (``die_with_parent``).

    The parent-death signal fires when the *thread* that started the child ends, not the
    process: a server started from a worker thread (``asyncio.to_thread`` in a test, whose
    thread pool ends with its event loop) was killed in the middle of a test session. Children
    are therefore started from the main thread, or else from one spawner thread that lives as
    long as the process."""
    global _SPAWNER
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)  # noqa: PLW1509 - only prctl runs there
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aquavolt-spawner")
    return _SPAWNER.submit(lambda: subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)).result()  # noqa: PLW1509


_GIVEN: set[int] = set()
_RANDOM = random.Random()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, below the kernel's ephemeral range, and not
    handed out before by this process. A port is only reserved once its server binds it,
    seconds later for a simulator: a port from the ephemeral range may meanwhile become the
    local end of some outgoing connection, and the kernel may offer a port just released
    again, so that two buses of one relocated field would otherwise share it."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, high - 12000)
    for _ in range(200):
        port = _RANDOM.randint(low, high) if high > low else 0
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise ServiceError("no free TCP port on 127.0.0.1 that was not handed out already")


def _binary(name: str, candidates: tuple[str, ...]) -> str:
    for c in (shutil.which(name), *candidates):
        if c and os.path.exists(c):
            return c
    raise ServiceError(
        f"{name} is not installed: run the README's setup (apt-get install mosquitto influxdb)"
    )


class ManagedServer:
    """A server process this object started, known by its PID."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 20.0) -> None:
        if self.running:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = popen_dying_with_us(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"{self.name} not ready after {timeout_s} s: {self.tail()}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the timeout."""
        if self.proc is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: the server hangs (slow or frozen peer)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto(ManagedServer):
    """Mosquitto on 127.0.0.1; with ``users`` it requires passwords, with ``acl`` it applies
    that ACL text, with ``tls`` it listens with certificates made by a local CA. It refuses
    payloads over ``message_size_limit`` bytes (the wire contract's limit; 0: no limit)."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        tls: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_queued_messages: int = 1_000_000,
        message_size_limit: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        super().__init__(workdir)
        self.message_size_limit = message_size_limit
        self.port = port or free_port()
        self.tls = tls
        self.users = users or {}
        self.acl = acl
        self.max_queued = max_queued_messages
        self.ca: CertFiles | None = None
        self.client_cert: CertFiles | None = None
        self._configure()

    def _configure(self) -> None:
        binary = _binary("mosquitto", ("/usr/sbin/mosquitto",))
        self._binary = binary
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 5",
            f"max_queued_messages {self.max_queued}",
            # the wire contract's largest payload (docs/wire-format.md, "Limits"); 0: none
            f"message_size_limit {self.message_size_limit}",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",  # small messages (lockstep grants) go out at once
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("")
            passwd = _binary("mosquitto_passwd", ("/usr/bin/mosquitto_passwd",))
            for user, password in self.users.items():
                subprocess.run([passwd, "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {pw}")
        if self.acl is not None:
            aclf = self.workdir / "acl"
            aclf.write_text(self.acl)
            lines.append(f"acl_file {aclf}")
        if self.tls:
            certs = self.workdir / "certs"
            self.ca = make_ca(certs)
            server = make_cert(self.ca, certs, "broker")
            self.client_cert = make_cert(self.ca, certs, "client")
            lines += [f"cafile {self.ca.cert}", f"certfile {server.cert}", f"keyfile {server.key}",
                      "tls_version tlsv1.2"]
        if os.geteuid() == 0:
            # Started by root (CI, containers), Mosquitto would drop to its own user, which
            # cannot reach a private temporary folder: keep the starting user.
            lines.append("user root")
        (self.workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self._binary, "-c", str(self.workdir / "mosquitto.conf")]

    def ready(self) -> bool:
        return _port_open(self.port)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        if self.tls and self.ca:
            return f"mqtts://{auth}127.0.0.1:{self.port}?ca={self.ca.cert}"
        return f"mqtt://{auth}127.0.0.1:{self.port}"

    def settings(self, user: str | None = None, password: str | None = None) -> MqttSettings:
        return MqttSettings.from_url(self.url(user, password))


class InfluxDB(ManagedServer):
    """InfluxDB 1.x (Debian's influxd) on 127.0.0.1, data under the work folder."""

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.rpc_port = free_port()
        self._binary = _binary("influxd", ("/usr/bin/influxd",))
        w = self.workdir
        (w / "influxdb.conf").write_text(
            f"""reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{w}/meta"
  logging-enabled = false
[data]
  dir = "{w}/data"
  wal-dir = "{w}/wal"
  query-log-enabled = false
  trace-logging-enabled = false
  cache-snapshot-write-cold-duration = "1m"
[coordinator]
  log-queries-after = "0s"
[retention]
  enabled = true
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  write-tracing = false
  max-body-size = 0
[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"
[subscriber]
  enabled = false
[logging]
  level = "warn"
"""
        )

    def command(self) -> list[str]:
        return [self._binary, "-config", str(self.workdir / "influxdb.conf")]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r:
                return bool(r.status == 204)
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, database: str = "aquavolt") -> InfluxSettings:
        return InfluxSettings(url=self.url, database=database)
