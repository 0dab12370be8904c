"""The live view's readings-per-second figure, whether it is redrawn every second or every 30 s
(``aquavolt demo --plain --plain-every-s 30``)."""

from __future__ import annotations

import pytest

from aquavolt import liveview
from aquavolt.liveview import LiveView
from aquavolt.settings import MqttSettings


@pytest.mark.parametrize("every_s", [1.0, 30.0])
def test_rate_is_readings_over_time_between_redraws(monkeypatch: pytest.MonkeyPatch, every_s: float) -> None:
    now = [1000.0]
    monkeypatch.setattr(liveview.time, "monotonic", lambda: now[0])
    view = LiveView(MqttSettings())
    assert view.rate() == 0.0  # nothing to compare with yet
    for _ in range(5):
        now[0] += every_s
        view.seen.readings += int(2500 * every_s)
        assert view.rate() == pytest.approx(2500.0)
