"""Judging a replay: the alarms a run raised against the scenario's expectations.

Pure: a loaded scenario and the alarm events seen in, a :class:`Report` out, written as
JSON and JUnit XML for CI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from aquavolt.wire import AlarmEvent
from simulators.scenario import LoadedScenario


def _iso(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ExpectResult:
    condition: str
    asset: str
    deadline: str
    raised_at: str | None
    delay_s: float | None
    ok: bool


@dataclass
class Unexpected:
    alarm_id: str
    raised_at: str
    priority: str
    message: str
    forbidden: bool


@dataclass
class Report:
    scenario: str
    start: str
    end: str
    expected: list[ExpectResult] = field(default_factory=list)
    unexpected: list[Unexpected] = field(default_factory=list)
    alarms_raised: int = 0

    @property
    def misses(self) -> int:
        return sum(1 for e in self.expected if not e.ok)

    @property
    def false_alarms(self) -> int:
        return sum(1 for u in self.unexpected if u.forbidden)

    @property
    def passed(self) -> bool:
        return self.misses == 0 and self.false_alarms == 0

    def to_json(self) -> str:
        doc = asdict(self)
        doc.update(passed=self.passed, misses=self.misses, false_alarms=self.false_alarms)
        return json.dumps(doc, indent=2)

    def text(self) -> str:
        lines = [f"replay {self.scenario}: {self.start} .. {self.end}, {self.alarms_raised} alarms raised"]
        for e in self.expected:
            if e.ok:
                lines.append(f"  ok      {e.condition} on {e.asset}: raised {e.raised_at}"
                             f" (after {e.delay_s:.0f} s, deadline {e.deadline})")
            elif e.raised_at:
                lines.append(f"  LATE    {e.condition} on {e.asset}: raised {e.raised_at}, "
                             f"deadline {e.deadline}")
            else:
                lines.append(f"  MISSED  {e.condition} on {e.asset}: not raised by {e.deadline}")
        for u in self.unexpected:
            if u.forbidden:
                lines.append(f"  FALSE   {u.alarm_id} raised {u.raised_at} ({u.priority}) {u.message}")
        extras: dict[str, list[Unexpected]] = {}
        for u in self.unexpected:
            if not u.forbidden:
                extras.setdefault(u.alarm_id.rpartition("/")[2], []).append(u)
        for cond, us in sorted(extras.items(), key=lambda kv: -len(kv[1])):
            assets = {u.alarm_id.rpartition("/")[0] for u in us}
            first = us[0]
            lines.append(f"  extra   {cond}: {len(us)} raised on {len(assets)} asset(s), not judged; "
                         f"first {first.alarm_id} at {first.raised_at}: {first.message}")
        verdict = "PASS" if self.passed else f"FAIL ({self.misses} missed, {self.false_alarms} false)"
        lines.append(f"  {verdict}")
        return "\n".join(lines)

    def junit(self) -> str:
        suite = ET.Element("testsuite", name=f"replay:{self.scenario}",
                           tests=str(len(self.expected) + 1),
                           failures=str(self.misses + (1 if self.false_alarms else 0)))
        for e in self.expected:
            case = ET.SubElement(suite, "testcase", classname=self.scenario,
                                 name=f"expect {e.condition} on {e.asset}")
            if not e.ok:
                msg = (f"raised {e.raised_at}, after deadline {e.deadline}" if e.raised_at
                       else f"not raised by {e.deadline}")
                ET.SubElement(case, "failure", message=msg)
        case = ET.SubElement(suite, "testcase", classname=self.scenario, name="no forbidden alarm")
        forbidden = [u for u in self.unexpected if u.forbidden]
        if forbidden:
            ET.SubElement(case, "failure", message=f"{len(forbidden)} forbidden alarm(s)").text = "\n".join(
                f"{u.alarm_id} at {u.raised_at}: {u.message}" for u in forbidden)
        return ET.tostring(suite, encoding="unicode")

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        j = folder / "replay-report.json"
        x = folder / "replay-junit.xml"
        j.write_text(self.to_json())
        x.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + self.junit() + "\n")
        return j, x


def judge(sc: LoadedScenario, events: list[AlarmEvent]) -> Report:
    """Compare the raised alarms with the scenario's ``expect`` and ``forbid`` lists."""
    start_ms, end_ms = int(sc.start * 1000), int(sc.end * 1000)
    raised = sorted((e for e in events if e.transition == "raised" and start_ms <= e.ts_ms <= end_ms),
                    key=lambda e: e.ts_ms)
    report = Report(scenario=sc.path.name, start=_iso(start_ms) or "", end=_iso(end_ms) or "",
                    alarms_raised=len(raised))
    matched: set[int] = set()
    for exp in sc.scenario.expect:
        deadline = int(sc.deadline(exp) * 1000)
        origin = int(sc.fault_start(exp.after) * 1000) if exp.within is not None else start_ms
        hit = next((i for i, e in enumerate(raised)
                    if e.condition == exp.condition and e.asset == exp.asset and e.ts_ms >= origin), None)
        if hit is not None:
            matched.add(hit)
        ts = raised[hit].ts_ms if hit is not None else None
        report.expected.append(ExpectResult(
            condition=exp.condition, asset=exp.asset, deadline=_iso(deadline) or "",
            raised_at=_iso(ts), delay_s=(ts - origin) / 1000 if ts is not None else None,
            ok=ts is not None and ts <= deadline))
    for i, e in enumerate(raised):
        if i in matched:
            continue
        forbidden = any(f.condition == e.condition and f.asset in (None, e.asset)
                        for f in sc.scenario.forbid)
        report.unexpected.append(Unexpected(e.alarm_id, _iso(e.ts_ms) or "", e.priority, e.message,
                                            forbidden))
    return report
