"""The demo's live terminal view: readings per second, gateways online, active alarms as
they are raised and cleared, and the SMS that would be sent. Fed by MQTT only."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from aquavolt.errors import WireError
from aquavolt.mqtt import Inbound, Transport
from aquavolt.settings import MqttSettings
from aquavolt.wire import AlarmEvent, AlarmState, CustomerAlert, GatewayStatus, Topics, decode

ACTIVE = {AlarmState.UNACK, AlarmState.ACKED}


@dataclass
class Seen:
    readings: int = 0
    messages: int = 0
    gateways: dict[str, str] = field(default_factory=dict)
    alarms: dict[str, AlarmEvent] = field(default_factory=dict)
    raised: list[AlarmEvent] = field(default_factory=list)
    sms: dict[tuple[str, str], CustomerAlert] = field(default_factory=dict)
    """Latest state of each message (event id, customer): its queued, sent, delivered updates
    are one SMS."""

    rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=50))

    def sms_count(self) -> int:
        return sum(1 for a in self.sms.values() if a.status in ("queued", "sent", "delivered"))


class LiveView:
    def __init__(self, settings: MqttSettings, client_id: str = "aquavolt-liveview") -> None:
        self.topics = Topics(settings.prefix)
        self.settings = settings
        self.seen = Seen()
        self._lock = threading.Lock()
        t = self.topics
        self.transport = Transport(settings, client_id, name="liveview.mqtt", subscriptions=[
            (t.all_data, 0), (t.all_gateway_status, 1), (t.all_alarms, 1), (t.alarm_events, 1),
            (t.customer_alerts, 1)])
        self.transport.on_message = self._on_message  # in paho's thread: the view only reads

    def _on_message(self, msg: Inbound) -> None:
        t = self.topics
        payload = msg.payload
        with self._lock:
            try:
                if msg.topic.endswith("/data"):
                    self.seen.messages += 1
                    self.seen.readings += payload.count(b'"point"')
                elif msg.topic == t.alarm_events:
                    ev = decode(payload, AlarmEvent)
                    if ev.transition == "raised":
                        self.seen.raised.append(ev)
                elif msg.topic.startswith(f"{t.prefix}/alarm/"):
                    ev = decode(payload, AlarmEvent)
                    self.seen.alarms[ev.alarm_id] = ev
                elif msg.topic == t.customer_alerts:
                    alert = decode(payload, CustomerAlert)
                    self.seen.sms[(alert.id, alert.customer)] = alert
                elif msg.topic.endswith("/status") and "/dev/" not in msg.topic:
                    st = decode(payload, GatewayStatus)
                    self.seen.gateways[st.gateway] = st.state.value
            except WireError:
                pass  # the live view only shows; the collector dead-letters bad payloads

    def start(self) -> None:
        self.transport.start()

    def stop(self) -> None:
        self.transport.stop()

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            older = [x for x in self.seen.rate if now - x[0] >= 0.5]
            self.seen.rate.append((now, self.seen.readings))
        if not older:
            return 0.0
        # over the last 10 s when the view is redrawn often, else since the previous redraw
        old = next((x for x in older if now - x[0] <= 10.0), older[-1])
        return (self.seen.readings - old[1]) / (now - old[0])

    def render(self, sim_time: str, width: int = 100) -> str:
        rate = self.rate()
        with self._lock:
            gws = dict(self.seen.gateways)
            active = sorted((a for a in self.seen.alarms.values() if a.state in ACTIVE),
                            key=lambda a: (a.priority != "critical", a.priority != "high", a.ts_ms))
            sms = sorted(self.seen.sms.values(), key=lambda a: a.ts_ms)[-5:]
            n_sms = self.seen.sms_count()
            total = self.seen.readings
        online = sum(1 for s in gws.values() if s == "online")
        lines = [
            f"aquavolt demo   simulated time {sim_time}",
            f"readings: {rate:,.0f}/s   total {total:,}   gateways online {online}/{len(gws)}"
            + "".join(f"  [{g}: {s}]" for g, s in sorted(gws.items())),
            f"active alarms: {len(active)}",
        ]
        for a in active[:12]:
            lines.append(f"  {a.priority:<8} {a.state.value:<6} {a.alarm_id:<40} {a.message}"[:width])
        lines.append(f"SMS that would be sent: {n_sms}")
        for m in sms:
            lines.append(f"  to {m.customer} ({m.language}, {m.status}): {m.text}"[:width])
        return "\n".join(lines)
