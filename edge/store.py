"""The durable queue behind store and forward: SQLite in WAL mode.

Every data message is written here (and committed) before it is handed to MQTT. The broker's
PUBACK only marks it ``acked`` (not sent again while that broker session lives); it is deleted
when the collector's stored mark (``{prefix}/gw/{gw}/stored``: every seq up to it is in
InfluxDB) reaches it. The queue also keeps the gateway's sequence numbers (``seq``, +1 per
data message, and ``bd_seq``, +1 per agent start) and the last stored mark, so that all
survive a restart or a kill -9.

Bounds: ``max_bytes`` of payload and ``max_age_s`` of age. Past them the oldest telemetry
goes first, then status, and alarm-class messages last; every dropped message is counted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from aquavolt.profiles import PointClass

CLASS_RANK = {PointClass.TELEMETRY: 0, PointClass.STATUS: 1, PointClass.ALARM: 2}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS q (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    cls INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS q_cls ON q (cls, seq);
CREATE TABLE IF NOT EXISTS seen_cmd (id TEXT PRIMARY KEY, ts_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS seen_cmd_ts ON seen_cmd (ts_ms);
"""


@dataclass(frozen=True)
class Row:
    seq: int
    topic: str
    payload: bytes


class Store:
    """A bounded, durable FIFO of data messages keyed by ``seq``. Single-threaded use."""

    def __init__(self, path: Path | str, max_bytes: int = 256 * 2**20, max_age_s: float = 7 * 86400,
                 synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA cache_size=-2000")  # 2 MB page cache whatever the backlog
        self.db.executescript(_SCHEMA)
        if "acked" not in {r[1] for r in self.db.execute("PRAGMA table_info(q)")}:
            self.db.execute("ALTER TABLE q ADD COLUMN acked INTEGER NOT NULL DEFAULT 0")
        # what a broker acknowledged in an earlier run may be lost with that broker: send again
        self.db.execute("UPDATE q SET acked = 0 WHERE acked = 1")
        self.dropped = 0
        self._pending: list[tuple[int, str, bytes, int, int, int]] = []
        cur = self.db.execute("SELECT COALESCE(MAX(seq), -1), COUNT(*), COALESCE(SUM(size), 0) FROM q")
        max_seq, self.depth, self.bytes = cur.fetchone()
        self.next_seq = max(self._meta("next_seq", 0), max_seq + 1)
        self.dropped_total = self._meta("dropped_total", 0)
        self.waiting = self.depth  # rows no broker has acknowledged yet
        stored = self._meta("stored_seq", -2)
        if stored == -2:  # a store from before the stored marks: what it deleted was delivered
            oldest = self.db.execute("SELECT COALESCE(MIN(seq), ?) FROM q", (self.next_seq,)).fetchone()[0]
            stored = oldest - 1
            self._set_meta("stored_seq", stored)
        self.stored_seq: int = stored

    def _meta(self, key: str, default: int) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def new_session(self) -> int:
        """The next birth/death sequence number (bd_seq), stored at once."""
        bd = self._meta("bd_seq", -1) + 1
        self._set_meta("bd_seq", bd)
        return bd

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def add(self, seq: int, topic: str, payload: bytes, cls: PointClass, created_ms: int) -> None:
        """Queue a message for the next :meth:`commit` (nothing is durable before it)."""
        self._pending.append((seq, topic, payload, CLASS_RANK[cls], created_ms, len(payload)))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def commit(self) -> list[Row]:
        """Write the added messages in one transaction; return them, now durable."""
        if not self._pending:
            return []
        rows, self._pending = self._pending, []
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO q (seq, topic, payload, cls, created_ms, size) VALUES (?,?,?,?,?,?)",
                rows,
            )
            self._set_meta("next_seq", self.next_seq)
        self.depth += len(rows)
        self.waiting += len(rows)
        self.bytes += sum(r[5] for r in rows)
        if self.bytes > self.max_bytes:
            self._drop_to(self.max_bytes)
        return [Row(r[0], r[1], r[2]) for r in rows]

    def ack(self, seqs: list[int]) -> None:
        """Mark messages acknowledged by the broker (kept until the stored mark passes them)."""
        if not seqs:
            return
        n = 0
        with self.db:
            self.db.execute("BEGIN")
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                marks = ",".join("?" * len(chunk))
                n += self.db.execute(f"UPDATE q SET acked = 1 WHERE acked = 0 AND seq IN ({marks})",
                                     chunk).rowcount
        self.waiting -= n

    def forget_through(self, seq: int) -> int:
        """The collector stored every message up to ``seq``: delete them; returns how many."""
        if seq <= self.stored_seq:
            return 0
        with self.db:
            self.db.execute("BEGIN")
            n, s, w = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(acked = 0), 0) FROM q WHERE seq <= ?",
                (seq,)).fetchone()
            self.db.execute("DELETE FROM q WHERE seq <= ?", (seq,))
            self._set_meta("stored_seq", seq)
        self.stored_seq = seq
        self.depth -= n
        self.bytes -= s
        self.waiting -= w
        return int(n)

    def delete(self, seqs: list[int]) -> int:
        """Delete these messages (a consumer without stored marks, Sparkplug's historical
        replay, deletes a message on its PUBACK); returns how many were held."""
        n = s = w = 0
        with self.db:
            self.db.execute("BEGIN")
            for seq in seqs:
                row = self.db.execute("SELECT size, acked FROM q WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    continue
                self.db.execute("DELETE FROM q WHERE seq = ?", (seq,))
                n, s, w = n + 1, s + row[0], w + (row[1] == 0)
        self.depth -= n
        self.bytes -= s
        self.waiting -= w
        return n

    def unack(self, first: int, last: int | None = None) -> int:
        """Send again the messages from ``first`` (to ``last``): the broker that acknowledged
        them may have lost them. Returns how many the store holds in that range."""
        hi = self.next_seq if last is None else last
        with self.db:
            self.db.execute("BEGIN")
            held = self.db.execute("SELECT COUNT(*) FROM q WHERE seq BETWEEN ? AND ?",
                                   (first, hi)).fetchone()[0]
            n = self.db.execute("UPDATE q SET acked = 0 WHERE acked = 1 AND seq BETWEEN ? AND ?",
                                (first, hi)).rowcount
        self.waiting += n
        return int(held)

    def missing(self, first: int, last: int, max_ranges: int = 1000) -> list[tuple[int, int]]:
        """Ranges of seqs in [first, last] after the stored mark that the store no longer holds
        (dropped under its bounds), at most ``max_ranges``."""
        lo = max(first, self.stored_seq + 1)
        hi = min(last, self.next_seq - 1)
        out: list[tuple[int, int]] = []
        expect = lo
        for (seq,) in self.db.execute("SELECT seq FROM q WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi)):
            if seq > expect:
                out.append((expect, seq - 1))
                if len(out) >= max_ranges:
                    return out
            expect = seq + 1
        if expect <= hi:
            out.append((expect, hi))
        return out

    def scan(self, after_seq: int, limit: int = 200) -> list[Row]:
        """Messages with seq > after_seq that no broker acknowledged, oldest first."""
        cur = self.db.execute(
            "SELECT seq, topic, payload FROM q WHERE seq > ? AND acked = 0 ORDER BY seq LIMIT ?",
            (after_seq, limit)
        )
        return [Row(s, t, bytes(p)) for s, t, p in cur.fetchall()]

    def oldest_created_ms(self) -> int | None:
        row = self.db.execute("SELECT created_ms FROM q ORDER BY seq LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def _drop(self, where: str, args: tuple[int, ...]) -> int:
        with self.db:
            self.db.execute("BEGIN")
            n, s, w = self.db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(acked = 0), 0) FROM q WHERE {where}",
                args).fetchone()
            self.db.execute(f"DELETE FROM q WHERE {where}", args)
            self.dropped_total += n
            self._set_meta("dropped_total", self.dropped_total)
        self.depth -= n
        self.bytes -= s
        self.waiting -= w
        self.dropped += n
        return int(n)

    def _drop_to(self, target_bytes: int) -> None:
        """Drop the oldest messages of the lowest class first until under target."""
        for cls in sorted(CLASS_RANK.values()):
            while self.bytes > target_bytes:
                rows = self.db.execute(
                    "SELECT seq, size FROM q WHERE cls = ? ORDER BY seq LIMIT 512", (cls,)
                ).fetchall()
                if not rows:
                    break
                excess = self.bytes - target_bytes
                cut, acc = rows[-1][0], 0
                for seq, size in rows:
                    acc += size
                    if acc >= excess:
                        cut = seq
                        break
                self._drop("cls = ? AND seq <= ?", (cls, cut))

    def prune(self, now_ms: int) -> int:
        """Drop messages older than max_age_s (every class: the bound is the bound)."""
        limit = now_ms - int(self.max_age_s * 1000)
        if self.depth == 0:
            return 0
        oldest = self.oldest_created_ms()
        if oldest is None or oldest >= limit:
            return 0
        return self._drop("created_ms < ?", (limit,))

    # ------------------------------------------------------------ command ids
    def claim_command(self, cmd_id: str, ts_ms: int, forget_before_ms: int, max_ids: int) -> bool:
        """Record a command id as seen, durably, before it is executed; False when it was seen.

        Ids issued before ``forget_before_ms`` are forgotten (a command that old is refused as
        stale whatever its id), and at most ``max_ids`` are kept (the oldest issued go first).
        """
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute("INSERT OR IGNORE INTO seen_cmd (id, ts_ms) VALUES (?, ?)", (cmd_id, ts_ms))
            if cur.rowcount == 0:
                return False
            self.db.execute("DELETE FROM seen_cmd WHERE ts_ms < ?", (forget_before_ms,))
            self.db.execute("DELETE FROM seen_cmd WHERE id IN (SELECT id FROM seen_cmd ORDER BY ts_ms DESC "
                            "LIMIT -1 OFFSET ?)", (max_ids,))
        return True

    def close(self) -> None:
        self.db.close()
