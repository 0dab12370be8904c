"""The store-and-forward queue's bounds (a real SQLite file): past ``max_bytes`` the oldest
telemetry goes first, then status, alarm-class messages last; past ``max_age_s`` every class
goes; every dropped message is counted, and the count survives a restart, as does ``seq``."""

from __future__ import annotations

from pathlib import Path

from aquavolt.edge.store import Store
from aquavolt.profiles import PointClass

PAYLOAD = b"x" * 100  # every message 100 bytes


def _fill(store: Store, classes: list[PointClass], created_ms: int = 0) -> list[int]:
    seqs = []
    for cls in classes:
        seq = store.take_seq()
        store.add(seq, f"t/{cls.value}/{seq}", PAYLOAD, cls, created_ms + seq)
        seqs.append(seq)
    store.commit()
    return seqs


def _left(store: Store) -> list[tuple[int, str]]:
    return [(r.seq, r.topic.split("/")[1]) for r in store.scan(-1, 10_000)]


def test_over_the_byte_bound_telemetry_goes_first_then_status_alarms_last(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite3", max_bytes=1_000)
    tel, st, al = PointClass.TELEMETRY, PointClass.STATUS, PointClass.ALARM
    _fill(store, [al, tel, st, tel, al, tel, st, tel])  # 800 bytes: under the bound
    assert store.dropped == 0 and store.depth == 8
    _fill(store, [tel, tel, tel, tel])  # 1,200 bytes: two messages must go, the oldest telemetry
    assert store.dropped == 2 and store.bytes <= 1_000
    assert [s for s, _ in _left(store)] == [0, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    _fill(store, [al, al, al, al, al, al])  # 1,600 bytes: every telemetry goes before any status
    kinds = [k for _, k in _left(store)]
    assert "telemetry" not in kinds and kinds.count("alarm") == 8 and kinds.count("status") == 2
    _fill(store, [al, al])  # now status goes, the alarms stay as long as they fit
    kinds = [k for _, k in _left(store)]
    assert kinds == ["alarm"] * 10 and store.bytes == 1_000
    dropped = store.dropped_total
    assert dropped == store.dropped == 10
    next_seq = store.next_seq
    store.close()
    again = Store(tmp_path / "q.sqlite3", max_bytes=1_000)
    assert again.dropped_total == dropped and again.depth == 10 and again.next_seq == next_seq
    again.close()


def test_past_the_age_bound_every_class_goes_and_is_counted(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite3", max_age_s=3600)
    _fill(store, [PointClass.ALARM, PointClass.TELEMETRY, PointClass.STATUS], created_ms=0)
    _fill(store, [PointClass.TELEMETRY], created_ms=3_000_000)
    assert store.prune(now_ms=3_600_000 + 10) == 3  # the three older than an hour, alarm included
    assert [s for s, _ in _left(store)] == [3] and store.dropped_total == 3
    assert store.prune(now_ms=3_600_000 + 20) == 0
    store.close()


def test_broker_acked_messages_stay_until_the_stored_mark(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite3")
    _fill(store, [PointClass.TELEMETRY] * 5)
    store.ack([0, 1, 2, 3, 4])  # the broker has them: not sent again, not forgotten either
    assert store.scan(-1) == [] and store.depth == 5 and store.waiting == 0
    assert store.forget_through(2) == 3  # the collector stored 0..2
    assert store.depth == 2 and store.stored_seq == 2
    # a lower mark after it (another collector of a share group, a stale retained one): nothing
    assert store.forget_through(1) == 0 and store.forget_through(-1) == 0
    assert store.depth == 2 and store.stored_seq == 2
    assert store.unack(store.stored_seq + 1) == 2  # a new connection: 3 and 4 go again
    assert [r.seq for r in store.scan(-1)] == [3, 4] and store.waiting == 2
    store.ack([3, 4])
    store.close()
    again = Store(tmp_path / "q.sqlite3")  # a restart: what a broker acknowledged goes again
    assert again.stored_seq == 2 and [r.seq for r in again.scan(-1)] == [3, 4] and again.waiting == 2
    again.close()


def test_a_range_the_store_dropped_is_named_with_its_size(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite3", max_bytes=500)
    tel, al = PointClass.TELEMETRY, PointClass.ALARM
    _fill(store, [tel, al, tel, tel, al, tel, tel, tel])  # 800 bytes: the three oldest telemetry go
    assert store.dropped == 3
    assert store.missing(0, 7) == [(0, 0), (2, 3)]
    assert store.unack(0, 7) == 5  # what it still holds is sent again
    assert store.missing(5, 20) == []  # past the newest seq nothing is missing
    store.forget_through(2)  # at or below the stored mark nothing is lost
    assert store.missing(0, 7) == [(3, 3)]
    store.close()


def test_store_before_stored_marks_counts_what_it_deleted_as_delivered(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.sqlite3")
    _fill(store, [PointClass.TELEMETRY] * 4)
    store.db.execute("DELETE FROM q WHERE seq < 2")  # deleted on PUBACK by an earlier version
    store.db.execute("DELETE FROM meta WHERE key = 'stored_seq'")
    store.close()
    again = Store(tmp_path / "q.sqlite3")
    assert again.stored_seq == 1 and again.missing(0, 3) == []
    again.close()


def test_a_broker_acknowledgement_writes_nothing_to_the_queue_file(tmp_path: Path) -> None:
    """A PUBACK only says "not again on this session" (a restart sends everything after the
    stored mark again), so it is kept beside the queue, never by rewriting its rows: on a
    gateway that would double what is written to the SD card for every message."""
    store = Store(tmp_path / "q.sqlite3")
    seqs = _fill(store, [PointClass.TELEMETRY] * 50)
    wal = tmp_path / "q.sqlite3-wal"
    before = wal.stat().st_size
    store.ack([*seqs[:40], 999])  # 999: never held, not counted
    assert wal.stat().st_size == before
    assert store.waiting == 10 and [r.seq for r in store.scan(-1)] == seqs[40:]
    assert [r.seq for r in store.scan(seqs[44])] == seqs[45:]
    store.ack(seqs[:5])  # already acknowledged: counted once
    assert store.waiting == 10
    assert store.forget_through(seqs[19]) == 20 and store.waiting == 10  # 0..19 were acked
    assert store.unack(seqs[30], seqs[34]) == 5 and store.waiting == 15
    assert [r.seq for r in store.scan(-1)] == seqs[30:35] + seqs[40:]
    store.close()
    again = Store(tmp_path / "q.sqlite3")
    assert again.depth == 30 and again.waiting == 30 and [r.seq for r in again.scan(-1)] == seqs[20:]
    again.close()


def test_the_queue_is_durable_across_a_power_cut_by_default(tmp_path: Path, monkeypatch) -> None:
    """WAL, and with the default ``store_synchronous: FULL`` every commit's WAL frames go on
    the card (an fsync of the WAL file, which the link runs off the event loop before it
    publishes the commit's messages), so a published message survives a power cut, and so
    does the next seq (never one number for two messages after a reboot)."""
    import os

    from aquavolt.edge.config import EdgeSettings

    assert EdgeSettings().store_synchronous == "FULL"
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    store = Store(tmp_path / "q.sqlite3")
    assert store.sync_wal and store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _fill(store, [PointClass.TELEMETRY] * 3)
    store.sync()
    assert store._wal_fd is not None and store._wal_fd in synced
    assert os.fstat(store._wal_fd).st_ino == (tmp_path / "q.sqlite3-wal").stat().st_ino
    store.close()
