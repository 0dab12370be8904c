"""The systemd side: the notify protocol spoken over a real unix datagram socket, and the
unit file's promises (Type=notify, watchdog, restart, unprivileged dialout user, hardening)."""

from __future__ import annotations

import configparser
import socket
import threading
from pathlib import Path

from aquavolt.sdnotify import Notifier

UNIT = Path(__file__).resolve().parents[2] / "edge" / "systemd" / "aquavolt-edge@.service"


def test_notify_messages_reach_the_socket(tmp_path: Path, monkeypatch) -> None:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    n = Notifier()
    try:
        assert n.enabled and n.watchdog_s == 20.0
        assert n.ready("3 devices") and n.watchdog() and n.stopping()
        got = [server.recv(1024).decode() for _ in range(3)]
    finally:
        n.close()
        server.close()
    assert got == ["READY=1\nSTATUS=3 devices", "WATCHDOG=1", "STOPPING=1"]
    assert not Notifier(address="").notify("READY=1")  # outside systemd: silent no-op


def test_a_notify_socket_nobody_reads_never_blocks_the_caller(tmp_path: Path) -> None:
    """A datagram socket queues few messages (``net.unix.max_dgram_qlen``, 10 here): once it is
    full, a blocking send waits for the reader. The agents ping from their event loop, so a
    slow or stuck reader froze the whole service; now a ping that does not fit is dropped and
    counted (systemd reads its socket; the next ping goes)."""
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    n = Notifier(address=path)
    sent: list[bool] = []
    pinger = threading.Thread(target=lambda: sent.extend(n.watchdog() for _ in range(200)), daemon=True)
    try:
        pinger.start()
        pinger.join(30)  # bounds a failure only: 200 sends take milliseconds
        assert not pinger.is_alive(), f"a send blocked after {len(sent)} pings"
        assert sent[0] and not all(sent) and n.dropped == sent.count(False) > 0
        server.recv(1024)  # the reader takes one: the next ping goes again
        assert n.watchdog()
    finally:
        n.close()
        server.close()


def test_unit_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure"
    assert int(svc["WatchdogSec"].rstrip("s")) > 0
    assert svc["User"] == "aquavolt" and svc["SupplementaryGroups"] == "dialout"
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet"):
        assert key in svc
    assert "edge run" in svc["ExecStart"] and "--state-dir" in svc["ExecStart"]
