"""Report by exception: which readings of a poll are worth sending.

A point is sent when its quality changes, when it moves by more than its deadband (absolute
``deadband_abs`` or ``deadband_pct`` of the last sent value; with neither, any change), or
when it has been silent for ``max_silence_s`` (heartbeat). A device that stops answering has
its points sent once with quality ``bad``, and not again until they recover.

State is a plain dict per device: a pure step ``filter_readings(state, ...) -> readings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aquavolt.codec import Value
from aquavolt.wire import Quality


@dataclass(frozen=True)
class Deadband:
    abs: float | None = None
    pct: float | None = None


@dataclass
class Sent:
    value: Value | None
    quality: Quality
    at_s: float


Reading = tuple[str, Value | None, int, Quality]
"""(point, value, ts_ms, quality): one reading of a poll."""


def moved(old: Value | None, new: Value | None, band: Deadband) -> bool:
    """Did the value move beyond the deadband (any change for non-numbers)?"""
    if isinstance(old, bool) or isinstance(new, bool) or not isinstance(old, int | float) \
            or not isinstance(new, int | float):
        return old != new
    delta = abs(float(new) - float(old))
    if band.abs is None and band.pct is None:
        return delta > 0
    if band.abs is not None and delta >= band.abs:
        return True
    return band.pct is not None and delta >= abs(float(old)) * band.pct / 100.0 and delta > 0


def clean(value: Value | None, quality: Quality) -> tuple[Value | None, Quality]:
    """NaN and infinities are not values: quality bad, value null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, Quality.BAD
    if value is None and quality is Quality.GOOD:
        return None, Quality.BAD
    return value, quality


def filter_readings(
    state: dict[str, Sent],
    readings: list[Reading],
    deadbands: dict[str, Deadband],
    now_s: float,
    max_silence_s: float,
) -> list[Reading]:
    """The readings to send; updates ``state`` (last sent value per point)."""
    out: list[Reading] = []
    for point, raw_value, ts_ms, raw_quality in readings:
        value, quality = clean(raw_value, raw_quality)
        last = state.get(point)
        if last is None or last.quality is not quality:
            send = True
        elif quality is not Quality.GOOD:
            send = False  # bad once, not on every poll
        else:
            send = moved(last.value, value, deadbands.get(point, Deadband())) \
                or now_s - last.at_s >= max_silence_s
        if send:
            state[point] = Sent(value, quality, now_s)
            out.append((point, value, ts_ms, quality))
    return out
