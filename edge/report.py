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


@dataclass(slots=True)
class Sent:
    """The last sent value of a point (updated in place: one object per point, not per poll)."""

    value: Value | None
    quality: Quality
    at_s: float


_NO_BAND = Deadband()


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
    """The readings to send; updates ``state`` (last sent value per point).

    The rules are :func:`clean` then :func:`moved`; the common case (a number after a number,
    no deadband) is decided inline, as it is most of every poll.
    """
    out: list[Reading] = []
    append = out.append
    get = state.get
    good = Quality.GOOD
    for polled in readings:
        point, value, ts_ms, quality = polled
        reading = polled
        tv = type(value)
        if (tv is float and not math.isfinite(value)) or (value is None and quality is good):  # type: ignore[arg-type]
            value, quality = None, Quality.BAD
            reading = (point, None, ts_ms, quality)
        last = get(point)
        if last is None:
            state[point] = Sent(value, quality, now_s)
        elif last.quality is not quality:
            last.value, last.quality, last.at_s = value, quality, now_s
        elif quality is not good:
            continue  # bad once, not on every poll
        else:
            old = last.value
            to = type(old)
            band = deadbands.get(point, _NO_BAND)
            plain = band.abs is None and band.pct is None
            if plain and (tv is float or tv is int) and (to is float or to is int):
                send = value != old if tv is to is float else float(value) != float(old)  # type: ignore[arg-type]
            else:
                send = moved(old, value, band)
            if not send and now_s - last.at_s < max_silence_s:
                continue
            last.value, last.at_s = value, now_s
        append(reading)
    return out
