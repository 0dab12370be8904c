"""The collector's stored marks as a pure state machine (collector/acks.py), on a clock the
test moves: contiguous marks, a gap asked again after the grace period with a doubling
period, lost ranges counted, bounds, a replaced store, and the state kept across a restart."""

from __future__ import annotations

from pathlib import Path

import orjson

from aquavolt.collector.acks import Acks, seq_of
from aquavolt.wire import ResendResult, Topics, encode

T = Topics("p/v1")


def _sent(out: list[tuple[str, bytes, bool]], suffix: str) -> list[dict[str, object]]:
    return [orjson.loads(p) for t, p, _r in out if t.endswith(suffix)]


def test_marks_gaps_and_losses(tmp_path: Path) -> None:
    acks = Acks(T, tmp_path / "stored.json", gap_grace_s=2.0, max_ahead=100)
    for s in (0, 1, 2, 5, 6):
        acks.stored("gw", s, 0)
    out = acks.due(0.0, 1)
    assert _sent(out, "/stored")[0]["seq"] == 2 and not _sent(out, "/resend")
    assert not _sent(acks.due(1.9, 1), "/resend")  # within the grace period: maybe in flight
    req = _sent(acks.due(2.0, 1), "/resend")
    assert (req[0]["from_seq"], req[0]["to_seq"]) == (3, 4) and acks.requests == 1
    assert not _sent(acks.due(3.0, 1), "/resend")  # asked again only after the period
    assert _sent(acks.due(4.0, 1), "/resend") and not _sent(acks.due(7.9, 1), "/resend")
    acks.stored("gw", 3, 0)
    acks.resent(encode(ResendResult(gateway="gw", from_seq=3, to_seq=4, resent=1, lost=[(4, 4)], ts_ms=1)))
    assert acks.lost == 1 and acks.gaps_lost == 1
    assert _sent(acks.due(8.0, 1), "/stored")[0]["seq"] == 6
    acks.stored("gw", 500, 0)  # too far ahead: not recorded, the mark stays below it
    assert acks.tracks["gw"].ahead == {}
    acks.save()
    again = Acks(T, tmp_path / "stored.json")
    assert again.tracks["gw"].contig == 6
    again.birth("gw", 0)  # same boot: nothing changes
    assert again.tracks["gw"].contig == 6
    again.stored("gw", 7, 3)
    again.birth("gw", 1)  # a bd_seq below the boots seen: a new store, its seqs start again
    assert again.tracks["gw"].contig == -1


def test_a_gateways_own_mark_sets_a_new_collector_right(tmp_path: Path) -> None:
    acks = Acks(T, tmp_path / "stored.json", gap_grace_s=0.0)
    acks.stored("gw", 900, 2)  # a new state folder: the first message seen is far along
    req = _sent(acks.due(0.0, 1), "/resend")[0]
    assert (req["from_seq"], req["to_seq"]) == (0, 899)
    acks.resent(encode(ResendResult(gateway="gw", from_seq=0, to_seq=899, resent=0, stored_seq=899,
                                    ts_ms=1)))
    assert acks.tracks["gw"].contig == 900 and acks.lost == 0


def test_seq_of_reads_the_envelope() -> None:
    assert seq_of(b'{"v":1,"gateway":"g","device":"d","seq":42,"bd_seq":3,"readings":[]}') == (42, 3)
    assert seq_of(b'{"bd_seq":3,"readings":[{"value":"\\"seq\\":7"}],"seq":9}') == (9, 3)
