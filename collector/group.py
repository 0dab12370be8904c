"""Stored marks in a share group: the members tell each other what they stored.

With ``share_group`` the broker gives each message to one member only, so no member sees
all of a gateway's seqs. Each member publishes on ``{prefix}/collector/{group}/stored``
(QoS 1, not retained) a :class:`~aquavolt.wire.GroupStored` with the ranges it handled since
its previous report (at most every 250 ms, with the marks; empty every ``heartbeat_s``), and
subscribes to that topic without ``$share``: every member gets every report, adds the
others' ranges to its own (:meth:`collector.acks.Acks.peer`) and computes the same marks.

A member reports only what InfluxDB accepted, so a report lost (a member killed before it
sent it, a broker that lost it) leaves a gap: asked again from the gateway and stored again,
never a mark above something not stored.

One member asks the gateways for gaps: the one with the smallest id among those heard from
in the last ``gone_after_s`` (itself included), so a gateway is not asked once per member;
when it goes silent, the next one takes over. A member that just started asks nothing for
two heartbeats: by then it has heard the members that are up.
"""

from __future__ import annotations

import math

from aquavolt.wire import MAX_GROUP_RANGES, GroupStored, decode, encode


class Group:
    def __init__(self, member: str, topic: str, heartbeat_s: float = 2.0, gone_after_s: float = 10.0) -> None:
        self.member = member
        self.topic = topic
        self.heartbeat_s = heartbeat_s
        self.gone_after_s = gone_after_s
        self.heard: dict[str, float] = {}  # member -> monotonic time of its last report
        self._sent_at = -math.inf
        self._since: float | None = None  # the first time asked who asks

    def take(self, payload: bytes, now_s: float) -> GroupStored | None:
        """A report from the group topic: another member's (None for our own). Raises
        WireError for a payload that breaks the contract."""
        report = decode(payload, GroupStored)
        if report.member == self.member:
            return None
        self.heard[report.member] = now_s
        return report

    def asks(self, now_s: float) -> bool:
        """Whether this member is the one that sends the resend requests."""
        if self._since is None:
            self._since = now_s
        if now_s - self._since < 2 * self.heartbeat_s:
            return False
        alive = [m for m, at in self.heard.items() if now_s - at <= self.gone_after_s]
        return min([self.member, *alive]) == self.member

    def reports(self, ranges: list[tuple[str, int, int, int]], now_s: float, now_ms: int) -> list[bytes]:
        """The payloads to publish now: the ranges handled since the last report (in as many
        messages as the bound asks), or an empty report when none was sent for ``heartbeat_s``."""
        if not ranges and now_s - self._sent_at < self.heartbeat_s:
            return []
        self._sent_at = now_s
        chunks = [ranges[i:i + MAX_GROUP_RANGES] for i in range(0, len(ranges), MAX_GROUP_RANGES)] or [[]]
        return [encode(GroupStored(member=self.member, ranges=chunk, ts_ms=now_ms)) for chunk in chunks]
