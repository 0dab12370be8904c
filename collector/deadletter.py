"""Dead letters: payloads and points the collector cannot store, with the reason.

Each goes to a JSONL file in the state folder (one :class:`aquavolt.wire.DeadLetter` per
line; the file rolls over to ``deadletter.jsonl.1`` past ``max_bytes``, so at most twice that
is kept) and to the MQTT topic ``{prefix}/deadletter/collector``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aquavolt.wire import MAX_DEADLETTER_PAYLOAD, MAX_TEXT, DeadLetter, encode

log = logging.getLogger("aquavolt.collector.deadletter")

COMPONENT = "collector"


def payload_text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(payload).decode()


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DeadLetters:
    def __init__(self, path: Path, publish: Callable[[bytes], None],
                 max_bytes: int = 50_000_000, max_payload_chars: int = 100_000) -> None:
        assert max_payload_chars + 20 <= MAX_DEADLETTER_PAYLOAD
        self.path = path
        self.publish = publish
        self.max_bytes = max_bytes
        self.max_payload_chars = max_payload_chars
        self.count = 0
        self.by_kind: dict[str, int] = {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, kind: str, topic: str, reason: str, payload: bytes | str) -> None:
        """Record one dead letter; ``kind`` is 'malformed', 'future' (stamped beyond the time
        window) or 'rejected' (by InfluxDB), counted apart."""
        text = payload if isinstance(payload, str) else payload_text(payload)
        if len(text) > self.max_payload_chars:
            text = text[: self.max_payload_chars] + "…(truncated)"
        reason = f"{kind}: {reason}"
        letter = DeadLetter(component=COMPONENT, topic=_cut(topic), reason=_cut(reason),
                            payload=text, ts_ms=int(time.time() * 1000))
        data = encode(letter)
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        log.warning("dead letter (%s) from %s: %s", kind, topic, reason[:300])
        try:
            if self.path.exists() and self.path.stat().st_size > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with open(self.path, "ab") as f:
                f.write(data + b"\n")
        except OSError as exc:
            log.error("cannot write dead letter file %s: %s", self.path, exc)
        self.publish(data)
