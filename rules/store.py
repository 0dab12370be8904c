"""Durable alarm state in SQLite: every alarm's record, every transition, every operator
action. The engine writes after each processing round (one transaction), and loads the
alarms and the event sequence at start, so the alarm state survives a restart.

The same transaction puts the round's MQTT messages in the ``outbox``: the engine publishes
from there and deletes a message once the broker has acknowledged it (``sent``), so a crash
between storing and publishing leaves the messages to publish at the next start."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aquavolt.rules.alarms import Alarm
from aquavolt.wire import AlarmEvent, Command, CommandReply, encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (alarm_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, alarm_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    transition TEXT NOT NULL, state TEXT NOT NULL, priority TEXT NOT NULL,
    by TEXT NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_alarm ON events (alarm_id, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, operator TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, request BLOB NOT NULL, result BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    retain INTEGER NOT NULL);
"""

Message = tuple[str, bytes, bool]


@dataclass(frozen=True)
class Action:
    """An operator's action, as the audit table keeps it."""

    ts_ms: int
    operator: str
    action: str
    target: str
    request: dict[str, Any]
    result: dict[str, Any]
"""An MQTT message to publish (QoS 1): topic, payload, retained."""


class Store:
    def __init__(self, state_dir: Path | str) -> None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "alarms.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def load(self) -> tuple[list[Alarm], int, int]:
        """(alarms, last event seq, watermark)."""
        alarms = [Alarm.from_json(orjson.loads(d)) for (d,) in self.db.execute("SELECT data FROM alarms")]
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        return alarms, int(meta.get("seq", 0)), int(meta.get("watermark", 0))

    def save(self, events: list[AlarmEvent], alarms: dict[str, Alarm], seq: int, watermark: int,
             messages: Sequence[Message] = (), action: Action | None = None) -> list[int]:
        """One transaction: the events, the alarms they touched, the sequence and watermark, the
        messages to publish (outbox) and the operator's action that made them, if any (its
        audit row). Returns the outbox ids of ``messages``, in order."""
        touched = {e.alarm_id for e in events}
        ids: list[int] = []
        with self.db:
            self.db.execute("BEGIN")
            if action is not None:
                self._insert_action(action)
            for topic, payload, retain in messages:
                cur = self.db.execute("INSERT INTO outbox (topic, payload, retain) VALUES (?,?,?)",
                                      (topic, payload, int(retain)))
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
            self.db.executemany(
                "INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?)",
                [(e.details["seq"], e.alarm_id, e.ts_ms, e.transition, str(e.state), e.priority, e.by,
                  e.model_dump_json().encode()) for e in events])
            self.db.executemany("INSERT OR REPLACE INTO alarms VALUES (?,?)",
                                [(a, orjson.dumps(alarms[a].to_json())) for a in touched if a in alarms])
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                                [("seq", seq), ("watermark", watermark)])
        return ids

    def outbox(self) -> list[tuple[int, Message]]:
        """Messages stored and not yet acknowledged by the broker, oldest first."""
        return [(i, (t, bytes(p), bool(r))) for i, t, p, r in
                self.db.execute("SELECT id, topic, payload, retain FROM outbox ORDER BY id")]

    def sent(self, ids: list[int]) -> None:
        """The broker acknowledged these outbox messages: they leave the outbox."""
        with self.db:
            self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def record_action(self, ts_ms: int, operator: str, action: str, target: str,
                      request: dict[str, Any], result: dict[str, Any]) -> None:
        with self.db:
            self._insert_action(Action(ts_ms, operator, action, target, request, result))

    def _insert_action(self, a: Action) -> None:
        self.db.execute("INSERT INTO actions (ts_ms, operator, action, target, request, result) "
                        "VALUES (?,?,?,?,?,?)", (a.ts_ms, a.operator, a.action, a.target,
                                                 orjson.dumps(a.request), orjson.dumps(a.result)))

    def actions(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT ts_ms, operator, action, target, request, result FROM actions "
                               "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"ts_ms": t, "operator": o, "action": a, "target": g, "request": orjson.loads(q),
                 "result": orjson.loads(r)} for t, o, a, g, q, r in rows]

    def events(self, *, alarm_id: str | None = None, since_ms: int | None = None,
               until_ms: int | None = None, priority: str | None = None, asset: str | None = None,
               limit: int = 500) -> list[dict[str, Any]]:
        sql = "SELECT payload FROM events WHERE 1=1"
        args: list[Any] = []
        if alarm_id:
            sql += " AND alarm_id = ?"
            args.append(alarm_id)
        if asset:
            sql += " AND alarm_id LIKE ?"
            args.append(asset + "/%")
        if since_ms is not None:
            sql += " AND ts_ms >= ?"
            args.append(since_ms)
        if until_ms is not None:
            sql += " AND ts_ms < ?"
            args.append(until_ms)
        if priority:
            sql += " AND priority = ?"
            args.append(priority)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [orjson.loads(p) for (p,) in self.db.execute(sql, args)]

    def raised_events(self, since_ms: int, until_ms: int) -> list[tuple[int, str, str]]:
        """(ts_ms, alarm_id, priority) of every annunciated activation in the window, for performance
        figures (an activation hidden by suppression, shelving or out of service is not counted)."""
        return self.db.execute(
            "SELECT ts_ms, alarm_id, priority FROM events WHERE transition = 'raised' "
            "AND state NOT IN ('suppressed', 'shelved', 'out_of_service') AND ts_ms >= ? "
            "AND ts_ms < ? ORDER BY ts_ms", (since_ms, until_ms)).fetchall()


COMMAND_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, issued_ms INTEGER NOT NULL, operator TEXT NOT NULL, gateway TEXT NOT NULL,
    device TEXT NOT NULL, point TEXT NOT NULL, command BLOB NOT NULL, published INTEGER NOT NULL,
    outcome TEXT, reason TEXT, value_read BLOB, reply_ms INTEGER);
CREATE INDEX IF NOT EXISTS commands_issued ON commands (issued_ms);
CREATE TABLE IF NOT EXISTS replies (
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS replies_id ON replies (id);
"""


class CommandLog:
    """Every command issued through the API and every reply heard, in ``commands.sqlite`` beside
    ``alarms.sqlite``. A command is stored (committed) before it is published; every reply is
    kept as received, and the first reply of an issued command is also set on its row."""

    def __init__(self, state_dir: Path | str) -> None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "commands.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(COMMAND_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def issued(self, cmd: Command, gateway: str, device: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO commands (id, issued_ms, operator, gateway, device, point, command, published) "
                "VALUES (?,?,?,?,?,?,?,0)",
                (cmd.id, cmd.ts_ms, cmd.operator, gateway, device, cmd.point, encode(cmd)))

    def published(self, cmd_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE commands SET published = 1 WHERE id = ?", (cmd_id,))

    def reply(self, topic: str, reply: CommandReply, received_ms: int) -> None:
        with self.db:
            self.db.execute("INSERT INTO replies (id, received_ms, topic, payload) VALUES (?,?,?,?)",
                            (reply.id, received_ms, topic, encode(reply)))
            self.db.execute(
                "UPDATE commands SET outcome = ?, reason = ?, value_read = ?, reply_ms = ? "
                "WHERE id = ? AND gateway = ? AND device = ? AND outcome IS NULL",
                (reply.outcome.value, reply.reason, orjson.dumps(reply.value_read), reply.ts_ms, reply.id,
                 reply.gateway, reply.device))

    def recent(self, limit: int = 200, since_ms: int | None = None,
               cmd_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first: the command as sent and its outcome (None while unanswered)."""
        sql = ("SELECT id, issued_ms, operator, gateway, device, point, command, published, outcome, reason, "
               "value_read, reply_ms FROM commands WHERE 1=1")
        args: list[Any] = []
        if since_ms is not None:
            sql += " AND issued_ms >= ?"
            args.append(since_ms)
        if cmd_id is not None:
            sql += " AND id = ?"
            args.append(cmd_id)
        sql += " ORDER BY issued_ms DESC, rowid DESC LIMIT ?"
        args.append(limit)
        out = []
        for (cid, issued, op, gw, dev, point, command, pub, outcome, reason, read,
             reply_ms) in self.db.execute(sql, args):
            cmd = orjson.loads(command)
            out.append({"id": cid, "issued_ms": issued, "operator": op, "gateway": gw, "device": dev,
                        "point": point, "value": cmd["value"], "reason": cmd.get("reason", ""),
                        "issuer": cmd.get("issuer", ""), "published": bool(pub),
                        "outcome": outcome, "outcome_reason": reason,
                        "value_read": None if read is None else orjson.loads(read), "reply_ms": reply_ms})
        return out

    def replies(self, cmd_id: str) -> list[dict[str, Any]]:
        return [{"received_ms": r, "topic": t, **orjson.loads(p)} for r, t, p in self.db.execute(
            "SELECT received_ms, topic, payload FROM replies WHERE id = ? ORDER BY n", (cmd_id,))]
