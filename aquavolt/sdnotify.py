"""systemd's notify protocol, spoken directly over the $NOTIFY_SOCKET datagram socket
(no dependency): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

The socket is non-blocking: the services notify from their event loop, and a datagram socket
holds few messages (``net.unix.max_dgram_qlen``, often 10) before a blocking send waits for
its reader. A message that does not fit is dropped and counted (``dropped``): a watchdog ping
comes again a half-period later, and a reader that takes nothing for the whole watchdog
period restarts the service anyway, as a stuck one would be."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("aquavolt.sdnotify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0.0
        self._sock: socket.socket | None = None
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX,
                                       socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self._sock.sendto("\n".join(lines).encode(), addr)
        except BlockingIOError:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("systemd notify socket %s full: a message was dropped (its reader is "
                            "slow or stuck); dropped messages are counted", self.address)
            return False
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
