"""The collector's stored marks as a pure state machine (collector/acks.py), on a clock the
test moves: contiguous marks, a gap asked again after the grace period with a doubling
period, lost ranges counted, bounds, a replaced store, and the state kept across a restart."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from aquavolt.collector.acks import Acks, seq_of
from aquavolt.wire import GroupStored, ResendResult, Topics, decode, encode

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


def test_share_group_members_compute_the_mark_of_the_union(tmp_path: Path) -> None:
    """Two members of a share group, each storing every other seq: alone neither can mark
    past seq 0; with the other's report each marks the end. A report lost leaves a gap,
    asked again by one member only, never a mark above it."""
    from aquavolt.collector.group import Group

    a = Acks(T, tmp_path / "a.json", gap_grace_s=0.0, group=True)
    b = Acks(T, tmp_path / "b.json", gap_grace_s=0.0, group=True)
    ga, gb = Group("c-a", T.group_stored("g")), Group("c-b", T.group_stored("g"))
    for s in range(10):
        (a if s % 2 == 0 else b).stored("gw", s, 1)
    assert a.tracks["gw"].contig == 0 and b.tracks["gw"].contig == -1
    ra, rb = ga.reports(a.report(), 0.0, 1), gb.reports(b.report(), 0.0, 1)
    assert a.report() == [] and len(ra) == len(rb) == 1
    assert ga.take(ra[0], 0.0) is None  # its own report
    assert ga.take(rb[0], 0.0) is not None
    got = gb.take(ra[0], 0.0)
    assert got is not None and got.ranges == [("gw", 0, 0, 1), ("gw", 2, 2, 1), ("gw", 4, 4, 1),
                                              ("gw", 6, 6, 1), ("gw", 8, 8, 1)]
    for acks, report in ((b, ra[0]), (a, rb[0])):
        for gw, first, last, bd in decode(report, GroupStored).ranges:
            acks.peer(gw, first, last, bd)
    assert a.tracks["gw"].contig == b.tracks["gw"].contig == 9
    assert _sent(a.due(0.0, 1), "/stored")[0]["seq"] == _sent(b.due(0.0, 1), "/stored")[0]["seq"] == 9

    # b stores 10..12 but its report is lost; a stores 13: a gap for both
    for s in (10, 11, 12):
        b.stored("gw", s, 1)
    b.report()  # lost with the member
    a.stored("gw", 13, 1)
    b.peer("gw", 13, 13, 1)
    assert not ga.asks(0.0) and not ga.asks(3.9)  # just started: it may not have heard the others yet
    assert ga.asks(4.0) and not gb.asks(0.0) and not gb.asks(4.0)  # the smallest id heard from asks
    out_a, out_b = a.due(4.0, 1, ask=ga.asks(4.0)), b.due(4.0, 1, ask=gb.asks(4.0))
    assert _sent(out_a, "/stored")[0]["seq"] == 9  # never above the unreported 10..12
    assert [(r["from_seq"], r["to_seq"]) for r in _sent(out_a, "/resend")] == [(10, 12)]
    assert _sent(out_b, "/stored")[0]["seq"] == 13 and not _sent(out_b, "/resend")
    assert gb.asks(gb.gone_after_s + 0.1)  # a silent (last heard at 0): b takes over
    # the gateway answers a: it had 10..12 (its own mark says so): a's report carries it
    a.resent(encode(ResendResult(gateway="gw", from_seq=10, to_seq=12, resent=0, stored_seq=12, ts_ms=1)))
    assert a.tracks["gw"].contig == 13
    assert a.report() == [("gw", 10, 13, 1)]  # with 13, its own


def test_a_group_report_is_strict_and_bounded() -> None:
    from aquavolt.collector.group import Group
    from aquavolt.errors import WireError
    from aquavolt.wire import MAX_GROUP_RANGES

    g = Group("c-a", T.group_stored("g"))
    for bad in (b'{"v":1,"member":"c-b","ranges":[["gw",5,4,0]],"ts_ms":1}',
                b'{"v":1,"member":"c-b","ranges":[["gw","5",6,0]],"ts_ms":1}',
                b'{"v":1,"member":"c/b","ranges":[],"ts_ms":1}',
                b'{"v":1,"member":"c-b","ranges":[["gw",5,6,0,1]],"ts_ms":1}',
                b'{"v":1,"member":"c-b","ranges":[],"ts_ms":1,"x":0}'):
        with pytest.raises(WireError):
            g.take(bad, 0.0)
    many = [("gw", s * 2, s * 2, 0) for s in range(MAX_GROUP_RANGES + 1)]
    out = g.reports(many, 0.0, 1)
    assert len(out) == 2  # split under the bound
    assert g.reports([], 0.5, 1) == [] and len(g.reports([], 0.5 + g.heartbeat_s, 1)) == 1  # heartbeat


def test_every_gap_is_asked_in_the_same_round(tmp_path: Path) -> None:
    """Holes between the seqs held (a share group member killed before it reported what it
    stored leaves every other seq missing) are asked together, one request each, within the
    bounds; not one gap per doubling period."""
    acks = Acks(T, tmp_path / "stored.json", gap_grace_s=0.0, max_request=6, max_gaps=3)
    for s in (0, 2, 4, 6, 10, 30):
        acks.stored("gw", s, 0)
    req = [(r["from_seq"], r["to_seq"]) for r in _sent(acks.due(0.0, 1), "/resend")]
    assert req == [(1, 1), (3, 3), (5, 5)] and acks.requests == 3
    acks = Acks(T, tmp_path / "other.json", gap_grace_s=0.0, max_request=6)
    for s in (0, 2, 10):
        acks.stored("gw", s, 0)
    req = [(r["from_seq"], r["to_seq"]) for r in _sent(acks.due(0.0, 1), "/resend")]
    assert req == [(1, 1), (3, 7)]  # 6 seqs at most in all


def test_each_unfillable_gap_is_one_loss_point_none_overwriting_another(tmp_path: Path) -> None:
    acks = Acks(T, tmp_path / "stored.json", gap_grace_s=0.0)
    for s in (0, 3, 6, 9):
        acks.stored("gw", s, 0)
    answer = ResendResult(gateway="gw", from_seq=1, to_seq=8, resent=0, lost=[(1, 2), (4, 5)], ts_ms=500)
    acks.resent(encode(answer))
    acks.resent(encode(answer.model_copy(update={"lost": [(7, 8)]})))  # another answer, same ms
    acks.resent(encode(answer))  # the first again (redelivered): nothing new lost
    assert [(x.first, x.last, x.messages, x.ts_ms) for x in acks.losses] == [
        (1, 2, 2, 500), (4, 5, 2, 501), (7, 8, 2, 502)]
    assert acks.lost == 6 and acks.tracks["gw"].contig == 9
