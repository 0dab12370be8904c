"""The live view's readings-per-second figure, whether it is redrawn every second or every 30 s
(``aquavolt demo --plain --plain-every-s 30``)."""

from __future__ import annotations

import pytest

from aquavolt.harness import liveview
from aquavolt.harness.liveview import LiveView
from aquavolt.mqtt import Inbound
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


def test_sms_count_is_one_per_message_whatever_its_status_updates() -> None:
    """The SMS sink announces each message when queued, sent and delivered: one SMS, not three;
    a failed one is not counted as sent."""
    from aquavolt.wire import CustomerAlert, Topics, encode

    view = LiveView(MqttSettings())
    topic = Topics(MqttSettings().prefix).customer_alerts

    def alert(event: str, customer: str, status: str, ts: int) -> Inbound:
        return Inbound(topic, encode(CustomerAlert(id=event, customer=customer, kind="outage", language="fr",
                                        text="coupure", status=status, ts_ms=ts)), 0, 1, False, 0)

    for customer in ("c0001", "c0002"):
        for k, status in enumerate(("queued", "sent", "delivered")):
            view._on_message(alert("outage/tx-1a/1", customer, status, k))
    view._on_message(alert("outage/tx-1a/1", "c0003", "queued", 0))
    view._on_message(alert("outage/tx-1a/1", "c0003", "failed", 1))
    assert view.seen.sms_count() == 2
    assert "SMS that would be sent: 2" in view.render("2026-06-01 12:00")
