"""The alarm manager: ISA-18.2 lifecycle, one alarm per (asset, condition).

Pure and in memory: conditions and operator actions go in, :class:`AlarmEvent` transitions
come out; the service stores and publishes them. Two bits, active and acknowledged, give
the four shown states; shelved, suppressed (by design: plant state or topology) and out of
service hide an alarm, and when it comes back it is annunciated again if still active::

    normal --raise--> unack --ack--> acked --clear--> normal
                        |                                ^
                        +--clear--> rtn_unack --ack------+
    (raise again from rtn_unack -> unack; any shown state --shelve--> shelved --expiry
     or unshelve--> unack if active else normal; same for suppressed and out_of_service)

Every event carries ``details.seq``, a sequence number over all events. An operator
acknowledges what they saw: alarms raised after the ``seen_seq`` they send are skipped.

An outage alarm tells its story in ``AlarmEvent.outage`` (:class:`aquavolt.wire.OutageInfo`):
raised with the classification so far (momentary), a ``sustained`` event on the same alarm
when the detector says it crossed the IEEE 1366 threshold (the alarm's state does not change),
and the clear with the restoration time, the duration and the final class.

One incident, one alarm shown: an alarm grouped under a parent (``rules.topology.
CONSEQUENCES``: a feeder bay's ``breaker_closed`` under its feeder's ``outage``) carries
``parent`` (the parent's alarm id) on every event from the moment the parent is active until
it is raised again, and is suppressed by design (not annunciated on its own) while the parent
is active and for its release time after the parent cleared. A breaker alarm raised first
(the trip is seen before the outage's declaration period ends) is annunciated, then grouped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from aquavolt.rules.api import Condition
from aquavolt.rules.topology import CONSEQUENCES, SUPPRESSIBLE, SUPPRESSIBLE_ORDER, Suppressor
from aquavolt.wire import AlarmEvent, AlarmState, OutageInfo

CHATTER_WINDOW_MS = 60_000
CHATTER_COUNT = 3  # EEMUA 191: 3 or more activations in 60 s
_ACKABLE = (AlarmState.UNACK, AlarmState.RTN_UNACK)


@dataclass
class Alarm:
    alarm_id: str
    asset: str
    condition: str
    priority: str = "medium"
    message: str = ""
    value: Any = None
    active: bool = False
    acked: bool = True
    state: AlarmState = AlarmState.NORMAL
    version: int = 0  # seq of its latest event
    raised_seq: int = 0  # seq of its latest activation
    first_ms: int = 0
    active_since_ms: int | None = None
    last_change_ms: int = 0
    condition_ms: int = 0  # event time of the newest condition applied: an older one never changes the state
    count: int = 0
    recent: list[int] = field(default_factory=list)  # activation times within the window
    chattering: bool = False
    shelved_until_ms: int | None = None
    shelved_by: str = ""
    shelve_reason: str = ""
    state_suppr: str = ""
    topo_suppr: str = ""
    out_of_service: bool = False
    audience: str = "operator"
    customer: str | None = None
    outage: dict[str, Any] | None = None  # OutageInfo as JSON, for an outage alarm
    parent: str = ""  # alarm id of the incident this activation is a consequence of

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alarm:
        data = dict(data)
        data["state"] = AlarmState(data["state"])
        return cls(**data)

    def shown_state(self) -> AlarmState:
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved_until_ms is not None:
            return AlarmState.SHELVED
        if self.state_suppr or self.topo_suppr:
            return AlarmState.SUPPRESSED
        if self.active:
            return AlarmState.ACKED if self.acked else AlarmState.UNACK
        return AlarmState.NORMAL if self.acked else AlarmState.RTN_UNACK


_CONTAINER_FIELDS = tuple(f.name for f in fields(Alarm) if f.default_factory is not MISSING)
"""The Alarm fields holding a container (a list, a dict): copied one level in a snapshot."""


class AlarmError(Exception):
    """An operator action that cannot apply (unknown alarm, wrong state, bad argument)."""


class AlarmManager:
    def __init__(self, suppressors: dict[str, list[Suppressor]] | None = None, release_ms: int = 0,
                 device_release_ms: dict[str, int] | None = None) -> None:
        self.alarms: dict[str, Alarm] = {}
        self.seq = 0
        self.stale_conditions = 0
        """Conditions older than the newest one their alarm had seen, that would have changed
        its state (data sent again after an outage or a restart): ignored, counted."""
        self.suppressors = suppressors or {}
        # After an upstream fault clears, its dependents stay suppressed (event time) until
        # each has had the chance to answer again: ``device_release_ms`` per device (its poll
        # interval plus the margin), ``release_ms`` for the others. Suppressor id -> when it
        # cleared.
        self.release_ms = release_ms
        self.device_release_ms = device_release_ms or {}
        self._cleared: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}  # suppressor alarm id -> devices, in field order
        for dev, sups in self.suppressors.items():
            for a, c in sups:
                self._dependents.setdefault(f"{a}/{c}", []).append(dev)

    # ------------------------------------------------------------ persistence
    def load(self, alarms: Iterable[Alarm], seq: int) -> None:
        self.alarms = {a.alarm_id: a for a in alarms}
        self.seq = seq

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], int, dict[str, int]]:
        """Everything the manager changes (alarms, sequence, pending releases), as a copy that
        ``restore`` brings back: the engine's rollback of a processing round that failed. Each
        alarm's fields are copied, its container fields (those with a ``default_factory``:
        ``recent``...) one level deep: field values are replaced or a container's items changed,
        never deeper. (Some 0.3 ms for 1,000 alarms; pickling them takes several times longer.)"""
        snap = {}
        for k, a in self.alarms.items():
            d = vars(a).copy()
            for f in _CONTAINER_FIELDS:
                d[f] = d[f].copy()
            snap[k] = d
        return snap, self.seq, dict(self._cleared)

    def restore(self, snapshot: tuple[dict[str, dict[str, Any]], int, dict[str, int]]) -> None:
        alarms, self.seq, cleared = snapshot
        self._cleared = dict(cleared)
        self.alarms = {}
        for k, values in alarms.items():
            a = Alarm.__new__(Alarm)
            vars(a).update(values)
            self.alarms[k] = a

    # ------------------------------------------------------------ internals
    def _event(self, a: Alarm, transition: str, ts: int, by: str = "", comment: str = "") -> AlarmEvent:
        self.seq += 1
        a.version = self.seq
        details: dict[str, Any] = {"seq": self.seq, "count": a.count, "raised_seq": a.raised_seq}
        if a.chattering:
            details["chattering"] = True
        if a.shelved_until_ms is not None:
            details.update(shelved_until_ms=a.shelved_until_ms, shelved_by=a.shelved_by,
                           shelve_reason=a.shelve_reason)
        if a.state_suppr or a.topo_suppr:
            details["suppressed_by"] = a.state_suppr or a.topo_suppr
        if a.audience != "operator":
            details.update(audience=a.audience, customer=a.customer)
        return AlarmEvent(alarm_id=a.alarm_id, asset=a.asset, condition=a.condition, state=a.state,
                          transition=transition, priority=a.priority,  # type: ignore[arg-type]
                          ts_ms=max(0, ts), message=a.message, value=a.value, by=by, comment=comment,
                          details=details, parent=a.parent or None,
                          outage=OutageInfo.model_validate(a.outage) if a.outage else None)

    def _settle(self, a: Alarm, transition: str, ts: int, out: list[AlarmEvent]) -> None:
        """Recompute the shown state; emit when it changed."""
        old = a.state
        hidden_before = old in (AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE)
        new = a.shown_state()
        if hidden_before and new not in (AlarmState.SHELVED, AlarmState.SUPPRESSED,
                                         AlarmState.OUT_OF_SERVICE):
            a.acked = not a.active  # back in view: annunciate again if still active
            new = a.shown_state()
        if new is old:
            return
        a.state = new
        a.last_change_ms = ts
        out.append(self._event(a, transition, ts))
        self._propagate(a, ts, out)

    def _topo(self, a: Alarm, ts: int) -> str:
        if a.condition not in SUPPRESSIBLE and a.condition not in CONSEQUENCES:
            return ""
        if not (a.active or a.topo_suppr):
            return ""  # an alarm at rest needs no hiding; a hidden one stays hidden until its cause ends
        parents = CONSEQUENCES.get(a.condition)
        for asset, cond in self.suppressors.get(a.asset, ()):
            if asset == a.asset and cond == a.condition:
                continue
            if parents is not None and cond not in parents:
                continue  # a grouped alarm is hidden by its parent only
            sid = f"{asset}/{cond}"
            sup = self.alarms.get(sid)
            if sup is not None and sup.active:
                if a.condition in CONSEQUENCES:
                    a.parent = sup.alarm_id
                return sup.alarm_id
            if a.condition in CONSEQUENCES and a.parent != sid:
                continue  # a consequence is grouped only under a parent active when it was raised
            cleared = self._cleared.get(sid)
            if cleared is not None and ts < cleared + self.release_of(a.asset):
                return sid  # its cause ended moments ago (or this was noticed late): released by tick()
        return ""

    def release_of(self, device: str) -> int:
        return self.device_release_ms.get(device, self.release_ms)

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        """Release the dependents of upstream faults that cleared long enough ago for each to
        have answered again (stamped at the instant each release was due)."""
        out: list[AlarmEvent] = []
        if not self._cleared:
            return out
        for sid, t in list(self._cleared.items()):
            sup = self.alarms[sid]
            deps = self._dependents.get(sid, ())
            due = sorted({t + self.release_of(dev) for dev in deps} or {t + self.release_ms})
            for when in due:
                if when > now_ms:
                    break
                self._propagate(sup, when, out, releasing=True)
            if due[-1] <= now_ms:
                del self._cleared[sid]
        return out

    def _propagate(self, sup: Alarm, ts: int, out: list[AlarmEvent], releasing: bool = False) -> None:
        deps = self._dependents.get(sup.alarm_id, ())
        if deps and self.release_ms and not releasing:
            if sup.active:
                self._cleared.pop(sup.alarm_id, None)
            else:
                self._cleared.setdefault(sup.alarm_id, ts)
        for dev in deps:
            for cond in (*SUPPRESSIBLE_ORDER, *CONSEQUENCES):
                a = self.alarms.get(f"{dev}/{cond}")
                if a is None or a is sup:
                    continue
                why = self._topo(a, ts)
                if why != a.topo_suppr:
                    a.topo_suppr = why
                    self._settle(a, "suppressed" if why else "unsuppressed", ts, out)

    # ------------------------------------------------------------ conditions
    def apply(self, c: Condition) -> list[AlarmEvent]:
        out: list[AlarmEvent] = []
        aid = c.alarm_id
        a = self.alarms.get(aid)
        if a is None:
            if not c.active and not c.suppressed_by:
                return out
            a = Alarm(aid, c.asset, c.condition, str(c.priority), first_ms=c.ts_ms,
                      audience=c.audience, customer=c.customer)
            self.alarms[aid] = a
        elif c.ts_ms < a.condition_ms:
            # stamped before the newest condition this alarm has seen (a batch sent again after
            # newer ones): the past it tells of does not undo the present
            if c.active != a.active:
                self.stale_conditions += 1
            return out
        a.condition_ms = c.ts_ms
        changed_supp = a.state_suppr != c.suppressed_by
        a.state_suppr = c.suppressed_by
        if c.active:
            a.priority, a.message = str(c.priority), c.message or a.message
        if c.value is not None:
            a.value = c.value
        story = _outage(c)
        transition = ""
        if c.active and not a.active:
            a.parent = ""
            a.outage = story
            a.active, a.acked = True, False
            a.count += 1
            a.active_since_ms = c.ts_ms
            a.raised_seq = self.seq + 1
            a.recent = [t for t in a.recent if c.ts_ms - t < CHATTER_WINDOW_MS] + [c.ts_ms]
            transition = "raised"
        elif not c.active and a.active:
            a.active = False
            a.active_since_ms = None
            a.outage = story or a.outage
            a.message = c.message or a.message
            transition = "cleared"
        elif c.active and story is not None and a.outage is not None and (
                story["classification"] != a.outage["classification"]):
            a.outage = story
            a.message = c.message or a.message
            a.last_change_ms = c.ts_ms
            out.append(self._event(a, str(story["classification"]), c.ts_ms))  # "sustained"
            return out
        if changed_supp and not transition:
            transition = "suppressed" if c.suppressed_by else "unsuppressed"
        if not transition:
            return out
        a.topo_suppr = self._topo(a, c.ts_ms)
        before = len(out)
        self._settle(a, transition, c.ts_ms, out)
        if transition in ("raised", "cleared") and len(out) == before:
            if a.outage is not None:  # hidden, but the outage's story is told (restoration)
                out.append(self._event(a, transition, c.ts_ms))
            self._propagate(a, c.ts_ms, out)  # hidden change: dependents still follow it
        if transition == "raised":
            chatter = len(a.recent) >= CHATTER_COUNT
            if chatter and not a.chattering:
                a.chattering = True
                out.append(self._event(a, "chattering", c.ts_ms))
            elif not chatter:
                a.chattering = False
        return out

    # ------------------------------------------------------------ operators
    def _get(self, alarm_id: str) -> Alarm:
        a = self.alarms.get(alarm_id)
        if a is None:
            raise AlarmError(f"no alarm {alarm_id!r}")
        return a

    def acknowledge(self, ids: Iterable[str] | None, seen_seq: int, by: str, now_ms: int,
                    comment: str = "") -> tuple[list[AlarmEvent], dict[str, str]]:
        """Acknowledge the alarms the operator saw (raised at or before ``seen_seq``).

        ``ids`` None: every unacknowledged alarm seen. Returns (events, skipped id -> why)."""
        out: list[AlarmEvent] = []
        skipped: dict[str, str] = {}
        targets = list(ids) if ids is not None else [
            k for k, a in self.alarms.items() if a.state in _ACKABLE]
        for aid in targets:
            a = self.alarms.get(aid)
            if a is None:
                skipped[aid] = "unknown alarm"
            elif a.state not in _ACKABLE:
                skipped[aid] = f"state is {a.state}"
            elif a.raised_seq > seen_seq:
                skipped[aid] = f"raised again after what you saw (seq {a.raised_seq} > {seen_seq})"
            else:
                a.acked = True
                a.state = a.shown_state()
                a.last_change_ms = now_ms
                out.append(self._event(a, "acknowledged", now_ms, by, comment))
        return out, skipped

    def shelve(self, alarm_id: str, by: str, reason: str, until_ms: int, now_ms: int) -> list[AlarmEvent]:
        a = self._get(alarm_id)
        if not reason.strip():
            raise AlarmError("shelving needs a reason")
        if until_ms <= now_ms:
            raise AlarmError("shelving needs an expiry in the future")
        a.shelved_until_ms, a.shelved_by, a.shelve_reason = until_ms, by, reason
        a.state = a.shown_state()
        a.last_change_ms = now_ms
        return [self._event(a, "shelved", now_ms, by, reason)]

    def unshelve(self, alarm_id: str, by: str, now_ms: int, transition: str = "unshelved",
                 comment: str = "") -> list[AlarmEvent]:
        a = self._get(alarm_id)
        if a.shelved_until_ms is None:
            raise AlarmError(f"{alarm_id} is not shelved")
        a.shelved_until_ms, a.shelved_by, a.shelve_reason = None, "", ""
        out: list[AlarmEvent] = []
        self._settle(a, transition, now_ms, out)  # leaving SHELVED always changes the state
        return [e.model_copy(update={"by": by, "comment": comment}) if e.alarm_id == alarm_id else e
                for e in out]

    def expire(self, now_ms: int) -> list[AlarmEvent]:
        """Shelves that ran out by ``now_ms`` (operator clock)."""
        out: list[AlarmEvent] = []
        for a in list(self.alarms.values()):
            if a.shelved_until_ms is not None and a.shelved_until_ms <= now_ms:
                out += self.unshelve(a.alarm_id, "system", a.shelved_until_ms, "shelve_expired")
        return out

    def comment(self, alarm_id: str, by: str, text: str, now_ms: int) -> list[AlarmEvent]:
        a = self._get(alarm_id)
        if not text.strip():
            raise AlarmError("empty comment")
        return [self._event(a, "commented", now_ms, by, text)]

    def set_in_service(self, alarm_id: str, in_service: bool, by: str, reason: str,
                       now_ms: int) -> list[AlarmEvent]:
        a = self._get(alarm_id)
        if a.out_of_service is (not in_service):
            raise AlarmError(f"{alarm_id} is already {'in' if in_service else 'out of'} service")
        a.out_of_service = not in_service
        out: list[AlarmEvent] = []
        name = "returned_to_service" if in_service else "removed_from_service"
        self._settle(a, name, now_ms, out)
        return [e.model_copy(update={"by": by, "comment": reason}) if e.alarm_id == alarm_id else e
               for e in out]


def _outage(c: Condition) -> dict[str, Any] | None:
    """The outage story (OutageInfo as JSON) a detector's condition carries, else None."""
    d = c.details
    if c.condition != "outage" or "classification" not in d or "start_ms" not in d:
        return None
    kind = d.get("kind", "feeder")
    return {
        "kind": kind,
        "feeder": d.get("feeder", c.asset),
        "transformer": c.asset if kind == "transformer" else None,
        "customers_affected": int(d.get("customers_affected", 0)),
        "started_ms": int(d["start_ms"]),
        "restored_ms": c.ts_ms if d.get("restored") else None,
        "duration_s": float(d.get("duration_s", max(0, c.ts_ms - int(d["start_ms"])) / 1000)),
        "classification": str(d["classification"]),
        "evidence": str(d.get("evidence", "")),
        "merged_into": d.get("merged_into"),
    }
