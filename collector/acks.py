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
                 max_request: int = 10_000, max_ahead: int = 50_000) -> None:
        self.topics = topics
        self.state_path = state_path
        self.gap_grace_s = gap_grace_s
        self.max_request = max_request
        self.max_ahead = max_ahead
        self.tracks: dict[str, Track] = {}
        self.requests = 0  # resend requests sent
        self.lost = 0  # seqs a gateway no longer had (or given up)
        self.gaps_lost = 0  # gaps reported unfillable
        self._saved: dict[str, tuple[int, int]] = {}
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

    def _lose(self, gw: str, t: Track, first: int, last: int, why: str) -> None:
        n = 0
        for s in range(max(first, t.contig + 1), last + 1):
            if s not in t.ahead:
                t.ahead[s] = t.bd_seq
                n += 1
        if n:
            self.lost += n
            self.gaps_lost += 1
            log.error("gateway %s: %d data messages lost for good (seq %d..%d): %s", gw, n, first, last,
                      why)

    def resent(self, payload: bytes) -> None:
        """A gateway's answer to a resend request."""
        res = decode(payload, ResendResult)
        t = self._track(res.gateway)
        if res.stored_seq > t.contig:  # the gateway knows more than we remember
            t.contig = res.stored_seq
            t.ahead = {s: b for s, b in t.ahead.items() if s > t.contig}
        for a, b in res.lost:
            self._lose(res.gateway, t, a, b, "dropped from the gateway's store under its bounds")
        self._advance(t)
        t.dirty = True
        if res.resent:
            log.info("gateway %s sends seq %d..%d again (%d held)", res.gateway, res.from_seq, res.to_seq,
                     res.resent)

    def due(self, now_s: float, now_ms: int) -> list[tuple[str, bytes, bool]]:
        """(topic, payload, retain) to publish now: changed marks, and requests for gaps that
        outlasted the grace period (asked again with a doubling period, up to a minute)."""
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
            if now_s - t.gap_since < self.gap_grace_s or now_s - t.asked_at < t.ask_every_s:
                continue
            first = t.contig + 1
            last = min(min(t.ahead) - 1, first + self.max_request - 1)
            t.asked_at = now_s
            t.ask_every_s = min(60.0, max(self.gap_grace_s, t.ask_every_s * 2))
            self.requests += 1
            log.warning("gateway %s: seq %d..%d missing while later ones arrived: asked again", gw,
                        first, last)
            out.append((self.topics.resend(gw),
                        encode(ResendRequest(gateway=gw, from_seq=first, to_seq=last, ts_ms=now_ms)), False))
        return out
