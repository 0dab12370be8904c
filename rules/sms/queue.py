"""The durable SMS queue (SQLite): one row per (event, customer), never two.

``UNIQUE(event_id, customer)`` is what guarantees one message per customer per event, across
restarts: a second ``enqueue`` of the same pair returns None. Statuses: queued -> sent ->
delivered | failed; suppressed (cooldown, no phone) is final and never sent.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sms (
  rowid INTEGER PRIMARY KEY,
  event_id TEXT NOT NULL,
  customer TEXT NOT NULL,
  kind TEXT NOT NULL,
  language TEXT NOT NULL,
  phone TEXT,
  text TEXT NOT NULL,
  status TEXT NOT NULL,
  event_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_ms INTEGER NOT NULL DEFAULT 0,
  provider_id TEXT,
  last_error TEXT NOT NULL DEFAULT '',
  updated_ms INTEGER NOT NULL,
  UNIQUE (event_id, customer)
);
CREATE INDEX IF NOT EXISTS sms_due ON sms (status, next_ms);
CREATE INDEX IF NOT EXISTS sms_cooldown ON sms (customer, kind, event_ms);
"""


@dataclass(frozen=True)
class Row:
    rowid: int
    event_id: str
    customer: str
    kind: str
    language: str
    phone: str | None
    text: str
    status: str
    event_ms: int
    attempts: int
    next_ms: int
    provider_id: str | None
    last_error: str
    updated_ms: int


class SmsQueue:
    def __init__(self, path: Path | str) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[Row]:
        return [Row(*r) for r in self.db.execute(f"SELECT * FROM sms {sql}", args)]

    def get(self, event_id: str, customer: str) -> Row | None:
        rows = self._rows("WHERE event_id = ? AND customer = ?", (event_id, customer))
        return rows[0] if rows else None

    def recent(self, customer: str, kind: str, since_ms: int) -> bool:
        """True when a message of this kind went (or is going) to the customer since ``since_ms``."""
        cur = self.db.execute(
            "SELECT 1 FROM sms WHERE customer = ? AND kind = ? AND event_ms >= ? "
            "AND status IN ('queued', 'sent', 'delivered') LIMIT 1", (customer, kind, since_ms))
        return cur.fetchone() is not None

    def enqueue(self, event_id: str, customer: str, kind: str, language: str, phone: str | None,
                text: str, status: str, event_ms: int, now_ms: int) -> Row | None:
        """Insert a message; None when this event was already recorded for this customer."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO sms (event_id, customer, kind, language, phone, text, status, event_ms, "
            "next_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, customer, kind, language, phone, text, status, event_ms, now_ms, now_ms))
        return self.get(event_id, customer) if cur.rowcount == 1 else None

    def due(self, now_ms: int, limit: int = 50) -> list[Row]:
        return self._rows("WHERE status = 'queued' AND next_ms <= ? ORDER BY next_ms LIMIT ?",
                          (now_ms, limit))

    def next_due_ms(self) -> int | None:
        r = self.db.execute("SELECT min(next_ms) FROM sms WHERE status = 'queued'").fetchone()
        return None if r[0] is None else int(r[0])

    def awaiting_delivery(self, limit: int = 50) -> list[Row]:
        return self._rows("WHERE status = 'sent' ORDER BY updated_ms LIMIT ?", (limit,))

    def update(self, rowid: int, now_ms: int, **cols: object) -> Row:
        sets = ", ".join(f"{k} = ?" for k in cols)
        self.db.execute(f"UPDATE sms SET {sets}, updated_ms = ? WHERE rowid = ?",
                        (*cols.values(), now_ms, rowid))
        return self._rows("WHERE rowid = ?", (rowid,))[0]

    def all(self) -> list[Row]:
        return self._rows("ORDER BY rowid")
