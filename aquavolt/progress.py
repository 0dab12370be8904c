"""``{prefix}/progress/{component}``: a component says it is ready and how far it has got.

The harness (demo, replay) waits on these messages, never on log files: a component is ready
once it is connected and serving, and its ``event_ms`` is the event time up to which it has
handled everything it received. Updates are throttled to one every ``every_s`` wall seconds,
and sent at once when the component has nothing left to do (``force``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aquavolt.wire import Progress, Topics, encode

PROGRESS_EVERY_S = 0.05

Publish = Callable[[str, bytes], Any]


class ProgressReporter:
    def __init__(self, component: str, topics: Topics, publish: Publish, clock_ms: Callable[[], int],
                 every_s: float = PROGRESS_EVERY_S) -> None:
        self.component = component
        self.topic = topics.progress(component)
        self.publish = publish
        self.clock_ms = clock_ms
        self.every_s = every_s
        self.is_ready = False
        self.event_ms: int | None = None
        self.backlog = 0
        self._sent: tuple[bool, int | None, int] | None = None
        self._at = 0.0

    def _send(self) -> None:
        state = (self.is_ready, self.event_ms, self.backlog)
        if state == self._sent:
            return
        self._sent = state
        self._at = time.monotonic()
        msg = Progress(component=self.component, ready=self.is_ready, event_ms=self.event_ms,
                       backlog=self.backlog, ts_ms=max(0, self.clock_ms()))
        self.publish(self.topic, encode(msg))

    def ready(self, ready: bool = True) -> None:
        """Connected and serving (again, after a reconnect): said at once."""
        self.is_ready = ready
        self._sent = None
        self._send()

    def update(self, event_ms: int | None, backlog: int = 0, force: bool = False) -> None:
        if event_ms is not None and (self.event_ms is None or event_ms > self.event_ms):
            self.event_ms = event_ms
        self.backlog = backlog
        if self.is_ready and (force or time.monotonic() - self._at >= self.every_s):
            self._send()
