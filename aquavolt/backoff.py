"""The one backoff of the project: capped exponential, with jitter.

Each wait is drawn between half and all of a ceiling that doubles from ``first_s`` up to
``max_s`` ("equal jitter"): clients that failed together (a broker or a database back
after an outage) do not all come back at the same instant, and none waits longer than
``max_s``. Used by the MQTT transport's reconnections, the collector's InfluxDB writes,
the edge's device breakers and its OPC-UA sessions.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None) -> None:
        if first_s <= 0 or max_s < first_s:
            raise ValueError(f"backoff: need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The longest the next wait may be."""
        return min(self.max_s, self.first_s * 2.0 ** min(self.failures, 64))

    def next(self) -> float:
        """Seconds to wait after one more failure."""
        ceiling = self.ceiling()
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """A success: the next failure waits ``first_s`` at most again."""
        self.failures = 0
