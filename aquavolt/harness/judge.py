"""Judging a replay strictly, on what an operator was shown.

Pure: a loaded scenario and the alarm events seen in, a :class:`Report` out, written as
text, JSON and JUnit XML for CI. Only events from the scenario's start to its end count.

**Annunciated** (shown to an operator as a new alarm; rules/alarms.py): an event in state
``unack`` whose transition is ``raised`` (from normal or from rtn_unack), or one of the
releases ``unsuppressed``, ``unshelved``, ``shelve_expired``, ``returned_to_service``: a
hidden alarm that comes back while still active is annunciated again at its release, even
if the operator saw it before it was hidden. Every other event (cleared, acknowledged,
chattering, commented, shelved, suppressed, a release to ``normal``) annunciates nothing.

**Not annunciated, not judged**: a ``raised`` event whose state is ``suppressed`` (by design:
plant state, or an upstream fault such as an outage hiding its dependants' loss of
communication; ``details.suppressed_by`` names the cause), ``shelved`` or
``out_of_service``. A raise while the alarm is *already* hidden changes no shown state and
the alarm manager emits no event for it at all. Both are listed as ``not_annunciated``.

**Each annunciation** is, in this order:

1. ``expected``: the first annunciation of an ``expect`` entry's condition on its asset at
   or after the delay's origin (the fault for ``within``, the start for ``by``), one per
   entry; it counts against the deadline (LATE when after it);
2. ``false`` when a ``forbid`` entry matches (forbid wins over allow);
3. ``allowed`` when an ``allow`` entry matches (condition, asset or any, inside its window);
4. otherwise ``false``: neither expected nor allowed. This includes an expected alarm
   annunciated again (a second raise of the same alarm id, or its re-annunciation at a
   release): one fault, one alarm, unless the scenario allows the repeat.

The replay passes when every expectation is met in time, there is no false alarm, and
every ``limits`` entry holds (figures: harness/eemua.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from aquavolt.harness import eemua
from aquavolt.harness.eemua import Annunciation, Figures, LimitResult, iso
from aquavolt.profiles import Frozen
from aquavolt.scenario import LoadedScenario
from aquavolt.wire import AlarmEvent, AlarmState

RELEASES = frozenset({"unsuppressed", "unshelved", "shelve_expired", "returned_to_service"})
ANNUNCIATING = RELEASES | {"raised"}
HIDDEN = {AlarmState.SUPPRESSED: "suppressed", AlarmState.SHELVED: "shelved",
          AlarmState.OUT_OF_SERVICE: "out of service"}

Verdict = Literal["expected", "allowed", "false", "not_annunciated"]


def annunciated(e: AlarmEvent) -> bool:
    """Whether this event showed an operator a new alarm (see the module docstring)."""
    return e.state == AlarmState.UNACK and e.transition in ANNUNCIATING


def hidden_why(e: AlarmEvent) -> str:
    """Why a raise was not shown."""
    what = HIDDEN.get(e.state, str(e.state))
    by = e.details.get("suppressed_by") if e.state == AlarmState.SUPPRESSED else None
    return f"raised while {what}" + (f" by {by}" if by else "")


class ExpectResult(Frozen):
    condition: str
    asset: str
    deadline: str
    raised_at: str | None
    delay_s: float | None
    ok: bool
    transition: str | None = None
    note: str = ""


class Judged(Frozen):
    alarm_id: str
    condition: str
    asset: str
    at: str
    ts_ms: int
    transition: str
    priority: str
    message: str
    verdict: Verdict
    why: str


def _summary(alarms: list[Judged], verdict: Verdict) -> list[tuple[str, list[Judged]]]:
    """Alarms of one verdict grouped by condition, the most frequent first."""
    groups: dict[str, list[Judged]] = {}
    for a in alarms:
        if a.verdict == verdict:
            groups.setdefault(a.condition, []).append(a)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


class Report(Frozen):
    scenario: str
    start: str
    end: str
    expected: list[ExpectResult] = []
    alarms: list[Judged] = []
    figures: Figures
    limits: list[LimitResult] = []

    def of(self, verdict: Verdict) -> list[Judged]:
        return [a for a in self.alarms if a.verdict == verdict]

    @property
    def misses(self) -> int:
        return sum(1 for e in self.expected if not e.ok)

    @property
    def false_alarms(self) -> int:
        return len(self.of("false"))

    @property
    def limit_failures(self) -> int:
        return sum(1 for lim in self.limits if not lim.ok)

    @property
    def passed(self) -> bool:
        return self.misses == 0 and self.false_alarms == 0 and self.limit_failures == 0

    def to_json(self) -> str:
        doc = self.model_dump()
        doc.update(passed=self.passed, misses=self.misses, false_alarms=self.false_alarms,
                   limit_failures=self.limit_failures,
                   counts={v: len(self.of(v)) for v in ("expected", "allowed", "false", "not_annunciated")})
        return json.dumps(doc, indent=2)

    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        over = f", {self.limit_failures} limit(s) exceeded" if self.limit_failures else ""
        return f"FAIL ({self.misses} missed, {self.false_alarms} false{over})"

    def text(self) -> str:
        hidden = len(self.of("not_annunciated"))
        lines = [f"replay {self.scenario}: {self.start} .. {self.end}, {self.figures.annunciated} alarms "
                 f"annunciated, {hidden} raised while hidden (not judged)"]
        for e in self.expected:
            if e.ok:
                lines.append(f"  ok      {e.condition} on {e.asset}: {e.transition} {e.raised_at}"
                             f" (after {e.delay_s:.0f} s, deadline {e.deadline})")
            elif e.raised_at:
                lines.append(f"  LATE    {e.condition} on {e.asset}: {e.transition} {e.raised_at}, "
                             f"deadline {e.deadline}")
            else:
                lines.append(f"  MISSED  {e.condition} on {e.asset}: not raised by {e.deadline}"
                             + (f" ({e.note})" if e.note else ""))
        for a in self.of("false"):
            lines.append(f"  FALSE   {a.alarm_id} {a.transition} {a.at} ({a.priority}), {a.why}: {a.message}")
        for label, verdict in (("allowed", "allowed"), ("hidden ", "not_annunciated")):
            for cond, group in _summary(self.alarms, verdict):  # type: ignore[arg-type]
                assets = {a.asset for a in group}
                lines.append(f"  {label}  {cond}: {len(group)} on {len(assets)} asset(s); "
                             f"first {group[0].alarm_id} at {group[0].at}"
                             + (f", {group[0].why}" if verdict == "not_annunciated" else ""))
        lines += [f"  {line}" for line in self.figures.lines()]
        for lim in self.limits:
            lines.append(f"  {'ok   ' if lim.ok else 'LIMIT'}   {lim.name} {lim.limit:g}: {lim.detail}")
        lines.append(f"  {self.verdict()}")
        return "\n".join(lines)

    def junit(self) -> str:
        cases = len(self.expected) + 1 + len(self.limits)
        failures = self.misses + (1 if self.false_alarms else 0) + self.limit_failures
        suite = ET.Element("testsuite", name=f"replay:{self.scenario}", tests=str(cases),
                           failures=str(failures))
        for e in self.expected:
            case = ET.SubElement(suite, "testcase", classname=self.scenario,
                                 name=f"expect {e.condition} on {e.asset}")
            if not e.ok:
                msg = (f"{e.transition} {e.raised_at}, after deadline {e.deadline}" if e.raised_at
                       else f"not raised by {e.deadline}" + (f" ({e.note})" if e.note else ""))
                ET.SubElement(case, "failure", message=msg)
        case = ET.SubElement(suite, "testcase", classname=self.scenario, name="no false alarm")
        false = self.of("false")
        if false:
            ET.SubElement(case, "failure", message=f"{len(false)} false alarm(s)").text = "\n".join(
                f"{a.alarm_id} {a.transition} {a.at}, {a.why}: {a.message}" for a in false)
        allowed = _summary(self.alarms, "allowed")
        if allowed:
            ET.SubElement(case, "system-out").text = "\n".join(
                f"allowed {c}: {len(g)} on {len({a.asset for a in g})} asset(s)" for c, g in allowed)
        for lim in self.limits:
            case = ET.SubElement(suite, "testcase", classname=self.scenario,
                                 name=f"limit {lim.name} {lim.limit:g}")
            if not lim.ok:
                ET.SubElement(case, "failure", message=lim.detail)
        return ET.tostring(suite, encoding="unicode")

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        j = folder / "replay-report.json"
        x = folder / "replay-junit.xml"
        j.write_text(self.to_json())
        x.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + self.junit() + "\n")
        return j, x


def _judged(e: AlarmEvent, verdict: Verdict, why: str) -> Judged:
    return Judged(alarm_id=e.alarm_id, condition=e.condition, asset=e.asset, at=iso(e.ts_ms) or "",
                  ts_ms=e.ts_ms, transition=e.transition, priority=e.priority, message=e.message,
                  verdict=verdict, why=why)


def _classifier(sc: LoadedScenario) -> Callable[[AlarmEvent], tuple[Verdict, str] | None]:
    """Forbid, then allow, for an annunciation no expectation took."""
    s = sc.scenario
    windows = [tuple(int(t * 1000) for t in sc.allow_window(a)) for a in s.allow]

    def classify(e: AlarmEvent) -> tuple[Verdict, str] | None:
        for j, f in enumerate(s.forbid):
            if f.condition == e.condition and f.asset in (None, e.asset):
                return "false", f"forbidden (forbid[{j}])"
        for j, a in enumerate(s.allow):
            t0, t1 = windows[j]
            if a.condition == e.condition and a.asset in (None, e.asset) and t0 <= e.ts_ms <= t1:
                return "allowed", f"allow[{j}]"
        return None

    return classify


def judge(sc: LoadedScenario, events: list[AlarmEvent]) -> Report:
    """Classify every raise and annunciation (module docstring) and compute the figures."""
    start_ms, end_ms = int(sc.start * 1000), int(sc.end * 1000)
    evs = sorted((e for e in events if start_ms <= e.ts_ms <= end_ms),
                 key=lambda e: (e.ts_ms, e.details.get("seq", 0)))
    anns = [e for e in evs if annunciated(e)]
    hidden = [e for e in evs if e.transition == "raised" and not annunciated(e)]
    taken: dict[int, int] = {}  # annunciation index -> expect index
    expected = []
    for k, exp in enumerate(sc.scenario.expect):
        deadline = int(sc.deadline(exp) * 1000)
        origin = int(sc.fault_start(exp.after) * 1000) if exp.within is not None else start_ms

        def wanted(e: AlarmEvent, origin: int = origin, cond: str = exp.condition,
                   asset: str = exp.asset) -> bool:
            return e.condition == cond and e.asset == asset and e.ts_ms >= origin

        hit = next((i for i, e in enumerate(anns) if i not in taken and wanted(e)), None)
        note = ""
        if hit is not None:
            taken[hit] = k
        else:
            h = next((e for e in hidden if wanted(e)), None)
            note = f"{hidden_why(h)} at {iso(h.ts_ms)}" if h is not None else ""
        e = anns[hit] if hit is not None else None
        expected.append(ExpectResult(
            condition=exp.condition, asset=exp.asset, deadline=iso(deadline) or "",
            raised_at=iso(e.ts_ms) if e else None, delay_s=(e.ts_ms - origin) / 1000 if e else None,
            ok=e is not None and e.ts_ms <= deadline, transition=e.transition if e else None, note=note))
    classify = _classifier(sc)
    seen_expected = set()
    judged = []
    for i, e in enumerate(anns):
        if i in taken:
            x = sc.scenario.expect[taken[i]]
            judged.append(_judged(e, "expected", f"expect[{taken[i]}] {x.condition} on {x.asset}"))
            seen_expected.add(e.alarm_id)
            continue
        verdict, why = classify(e) or ("false", "annunciated again after the expected one, not allowed"
                                       if e.alarm_id in seen_expected else "neither expected nor allowed")
        judged.append(_judged(e, verdict, why))
    judged += [_judged(e, "not_annunciated", hidden_why(e)) for e in hidden]
    judged.sort(key=lambda j: j.ts_ms)
    fig = eemua.figures([Annunciation(ts_ms=e.ts_ms, alarm_id=e.alarm_id, priority=e.priority)
                         for e in anns], start_ms, end_ms)
    return Report(scenario=sc.path.name, start=iso(start_ms) or "", end=iso(end_ms) or "",
                  expected=expected, alarms=judged, figures=fig, limits=eemua.check(fig, sc.scenario.limits))
