"""End-to-end acknowledgement: per gateway, the highest ``seq`` stored in InfluxDB without a
gap, published retained on ``{prefix}/gw/{gw}/stored`` so that the gateway may forget its
data only then (a broker acknowledges before it persists); a gap that lasts is asked again
on ``{prefix}/gw/{gw}/resend``, and what the gateway answers it lost is counted and logged.

A pure state machine: the service feeds it what was written and what the gateways answered,
and asks it, with the time, what to publish. Bounded: at most ``max_ahead`` seqs are held
above a gap per gateway; one further ahead is not recorded (the mark stays below it, so the
gateway keeps it, and it is asked again once the gap before it is filled).

Its state (the mark of each gateway) is kept in ``stored.json``; without it (a new state
folder) a gateway's first gap reaches back to seq 0 and the gateway's answer, with its own
last mark (``stored_seq``), sets it right.

In a share group (``collector.group``) each member sees part of every gateway's seqs: it
records what it handled itself (``mine``, reported to the others) and adds what the others
report (:meth:`Acks.peer`), so that every member computes the same marks from the union.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from aquavolt.wire import ResendRequest, ResendResult, StoredMark, Topics, decode, encode

log = logging.getLogger("aquavolt.collector.acks")

_SEQ = re.compile(rb'"seq"\s*:\s*(\d+)')
_BD_SEQ = re.compile(rb'"bd_seq"\s*:\s*(\d+)')


def seq_of(payload: bytes) -> tuple[int, int] | None:
    """(seq, bd_seq) of a data message the router accepted. Its readings have only four keys
    and string values escape their quotes, so the first ``"seq":`` is the envelope's."""
    m = _SEQ.search(payload)
    if m is None:
        return None
    b = _BD_SEQ.search(payload)
    return int(m.group(1)), int(b.group(1)) if b else 0


@dataclass(frozen=True)
class Loss:
    """A gap a gateway could no longer fill: ``messages`` data messages of ``first``..``last``
    lost for good, as the gateway answered at ``ts_ms``."""

    gateway: str
    first: int
    last: int
    messages: int
    ts_ms: int


@dataclass
class Track:
    contig: int = -1  # every seq up to it is stored
    bd_seq: int = 0
    ahead: dict[int, int] = field(default_factory=dict)  # seq stored above a gap -> bd_seq
    gap_since: float | None = None
    asked_at: float = -1e18
    ask_every_s: float = 0.0
    dirty: bool = True
    published: int = -2


class Acks:
    def __init__(self, topics: Topics, state_path: Path, gap_grace_s: float = 2.0,
                 max_request: int = 10_000, max_ahead: int = 50_000, group: bool = False,
                 max_gaps: int = 100) -> None:
        self.topics = topics
        self.state_path = state_path
        self.gap_grace_s = gap_grace_s
        self.max_request = max_request
        self.max_ahead = max_ahead
        self.max_gaps = max_gaps
        self.tracks: dict[str, Track] = {}
        self.requests = 0  # resend requests sent
        self.lost = 0  # seqs a gateway no longer had (or given up)
        self.gaps_lost = 0  # gaps reported unfillable
        self._saved: dict[str, tuple[int, int]] = {}
        self.losses: list[Loss] = []  # gaps found unfillable, for InfluxDB (``data_loss``)
        self._loss_ms: dict[str, int] = {}
        # in a share group: (gateway, first, last, bd_seq) handled here since the last report
        self.mine: list[tuple[str, int, int, int]] | None = [] if group else None
        self._load()

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            for gw, (seq, bd) in orjson.loads(self.state_path.read_bytes()).items():
                self.tracks[gw] = Track(contig=int(seq), bd_seq=int(bd))
                self._saved[gw] = (int(seq), int(bd))

    def save(self) -> None:
        now = {gw: (t.contig, t.bd_seq) for gw, t in self.tracks.items()}
        if now == self._saved:
            return
        tmp = self.state_path.with_suffix(".tmp")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(now))
        os.replace(tmp, self.state_path)
        self._saved = now

    def _track(self, gw: str) -> Track:
        t = self.tracks.get(gw)
        if t is None:
            t = self.tracks[gw] = Track()
        return t

    def stored(self, gw: str, seq: int, bd_seq: int) -> None:
        """A data message of ``gw`` is in InfluxDB (or dead-lettered with its reason)."""
        t = self._track(gw)
        t.dirty = True  # a message the gateway sent again: it needs the mark again
        if self.mine is not None:
            self.mine.append((gw, seq, seq, bd_seq))
        if seq <= t.contig:
            return
        if seq - t.contig > self.max_ahead:
            return  # bounded: not recorded; asked again after the gap before it is filled
        t.ahead[seq] = bd_seq
        self._advance(t)

    def birth(self, gw: str, bd_seq: int) -> None:
        """A gateway's birth: a ``bd_seq`` below the boots seen means its store was replaced
        (its seqs start again): its mark starts again too."""
        t = self.tracks.get(gw)
        if t is not None and bd_seq < t.bd_seq:
            log.warning("gateway %s was born with bd_seq %d after %d: a new store; its stored mark "
                        "starts again", gw, bd_seq, t.bd_seq)
            self.tracks[gw] = Track()

    def peer(self, gw: str, first: int, last: int, bd_seq: int) -> None:
        """Another member of the share group handled ``gw``'s messages ``first``..``last``."""
        t = self._track(gw)
        if last <= t.contig:
            return
        if first <= t.contig + 1:
            t.contig, t.bd_seq = last, bd_seq
            t.ahead = {s: b for s, b in t.ahead.items() if s > last}
        else:
            for s in range(first, min(last, t.contig + self.max_ahead) + 1):
                t.ahead[s] = bd_seq
        t.dirty = True
        self._advance(t)

    def report(self) -> list[tuple[str, int, int, int]]:
        """What this member handled since the last report, as ``(gateway, first, last, bd_seq)``
        ranges (consecutive seqs of one boot), and forget it."""
        if not self.mine:
            return []
        mine, self.mine = sorted(self.mine), []
        out: list[tuple[str, int, int, int]] = []
        for gw, first, last, bd in mine:
            prev = out[-1] if out else None
            if prev is not None and prev[0] == gw and prev[3] == bd and first <= prev[2] + 1:
                out[-1] = (gw, prev[1], max(prev[2], last), bd)
            else:
                out.append((gw, first, last, bd))
        return out

    def _advance(self, t: Track) -> None:
        ahead = t.ahead
        nxt = t.contig + 1
        while nxt in ahead:
            t.bd_seq = ahead.pop(nxt)
            nxt += 1
        t.contig = nxt - 1
        if not ahead:
            t.gap_since = None
            t.ask_every_s = 0.0

    def _lose(self, gw: str, t: Track, first: int, last: int, why: str, ts_ms: int) -> None:
        n = 0
        for s in range(max(first, t.contig + 1), last + 1):
            if s not in t.ahead:
                t.ahead[s] = t.bd_seq
                n += 1
                if self.mine is not None:
                    self.mine.append((gw, s, s, t.bd_seq))
        if n:
            self.lost += n
            self.gaps_lost += 1
            # stamped with the gateway's answer; a further gap of that gateway at the same (or an
            # earlier) ms one ms later, so that no loss point overwrites another
            ts = max(ts_ms, self._loss_ms.get(gw, -1) + 1)
            self._loss_ms[gw] = ts
            self.losses.append(Loss(gw, first, last, n, ts))
            log.error("gateway %s: %d data messages lost for good (seq %d..%d): %s", gw, n, first, last,
                      why)

    def resent(self, payload: bytes) -> None:
        """A gateway's answer to a resend request."""
        res = decode(payload, ResendResult)
        t = self._track(res.gateway)
        if res.stored_seq > t.contig:  # the gateway knows more than we remember
            if self.mine is not None:  # (one range: the others take it as it is)
                self.mine.append((res.gateway, t.contig + 1, res.stored_seq, t.bd_seq))
            t.contig = res.stored_seq
            t.ahead = {s: b for s, b in t.ahead.items() if s > t.contig}
        for a, b in res.lost:
            self._lose(res.gateway, t, a, b, "dropped from the gateway's store under its bounds", res.ts_ms)
        self._advance(t)
        t.dirty = True
        if res.resent:
            log.info("gateway %s sends seq %d..%d again (%d held)", res.gateway, res.from_seq, res.to_seq,
                     res.resent)

    def due(self, now_s: float, now_ms: int, ask: bool = True) -> list[tuple[str, bytes, bool]]:
        """(topic, payload, retain) to publish now: changed marks, and requests for gaps that
        outlasted the grace period (asked again with a doubling period, up to a minute).
        ``ask`` False: marks only (in a share group, one member asks the gateways)."""
        out: list[tuple[str, bytes, bool]] = []
        for gw, t in self.tracks.items():
            if t.dirty:
                t.dirty = False
                t.published = t.contig
                out.append((self.topics.stored(gw),
                            encode(StoredMark(gateway=gw, seq=t.contig, bd_seq=t.bd_seq, ts_ms=now_ms)),
                            True))
            if not t.ahead:
                continue
            if t.gap_since is None:
                t.gap_since = now_s
            if not ask or now_s - t.gap_since < self.gap_grace_s or now_s - t.asked_at < t.ask_every_s:
                continue
            gaps = self._gaps(t)
            t.asked_at = now_s
            t.ask_every_s = min(60.0, max(self.gap_grace_s, t.ask_every_s * 2))
            self.requests += len(gaps)
            log.warning("gateway %s: seq %s missing while later ones arrived: asked again", gw,
                        ", ".join(f"{a}..{b}" for a, b in gaps[:5]) + (f" and {len(gaps) - 5} more gaps"
                                                                     if len(gaps) > 5 else ""))
            out += [(self.topics.resend(gw),
                     encode(ResendRequest(gateway=gw, from_seq=a, to_seq=b, ts_ms=now_ms)), False)
                    for a, b in gaps]
        return out

    def _gaps(self, t: Track) -> list[tuple[int, int]]:
        """The gaps below the seqs held ahead, oldest first: at most ``max_gaps`` of them and
        ``max_request`` seqs in all (one request each)."""
        out: list[tuple[int, int]] = []
        nxt, budget = t.contig + 1, self.max_request
        for s in sorted(t.ahead):
            if s > nxt:
                last = min(s - 1, nxt + budget - 1)
                out.append((nxt, last))
                budget -= last - nxt + 1
                if budget <= 0 or len(out) >= self.max_gaps:
                    break
            nxt = s + 1
        return out
