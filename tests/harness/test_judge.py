"""The strict replay judge on hand-built alarm events: what an operator was shown is judged
(expected, allowed or false), what was hidden when raised is not; EEMUA 191 figures and
limits; the text, JSON and JUnit reports."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml

from aquavolt.clock import parse_instant
from aquavolt.errors import ConfigError
from aquavolt.harness import eemua
from aquavolt.harness.judge import judge
from aquavolt.scenario import LoadedScenario, Scenario, load_scenario
from aquavolt.wire import AlarmEvent

START = "2026-06-01T00:00:00Z"
T0 = int(parse_instant(START) * 1000)
MIN = 60_000


def scenario(**extra) -> LoadedScenario:
    doc = {"field": "f.yaml", "start": START, "duration": "2h",
           "faults": [{"id": "burst-a", "kind": "burst", "target": "zone-a", "at": "30m", "duration": "1h"}],
           "expect": [{"condition": "burst", "asset": "zone-a", "after": "burst-a", "within": "20m"}]}
    doc.update(extra)
    return LoadedScenario(Path("s.yaml"), Scenario.model_validate(doc), None)  # type: ignore[arg-type]


def ev(asset: str, condition: str, at_ms: int, transition: str = "raised", state: str = "unack",
       priority: str = "medium", **details) -> AlarmEvent:
    return AlarmEvent(alarm_id=f"{asset}/{condition}", asset=asset, condition=condition, state=state,
                      transition=transition, priority=priority, ts_ms=T0 + at_ms,
                      message=f"{condition} on {asset}", details=details)


BURST = ev("zone-a", "burst", 40 * MIN, priority="high")


def verdicts(report) -> list[tuple[str, str, str]]:
    return [(a.alarm_id, a.transition, a.verdict) for a in report.alarms]


def test_expected_alarm_in_time_passes():
    r = judge(scenario(), [BURST, ev("zone-a", "burst", 50 * MIN, "cleared", "rtn_unack"),
                           ev("zone-a", "burst", 51 * MIN, "acknowledged", "normal")])
    assert r.passed and r.expected[0].ok and r.expected[0].delay_s == 600
    assert verdicts(r) == [("zone-a/burst", "raised", "expected")]


def test_unexpected_alarm_is_false():
    r = judge(scenario(), [BURST, ev("pump-1", "fault", 45 * MIN)])
    assert not r.passed and r.false_alarms == 1
    assert r.of("false")[0].why == "neither expected nor allowed"
    assert "FALSE   pump-1/fault raised 2026-06-01T00:45:00Z (medium), neither expected nor allowed" in r.text()


def test_raise_while_suppressed_is_not_judged():
    hidden = ev("meter-1", "comm_fail", 41 * MIN, state="suppressed", suppressed_by="tx-1a/outage")
    r = judge(scenario(), [BURST, hidden])
    assert r.passed and r.figures.annunciated == 1
    (na,) = r.of("not_annunciated")
    assert na.why == "raised while suppressed by tx-1a/outage"
    assert "hidden   comm_fail: 1 on 1 asset(s)" in r.text()


def test_suppressed_alarm_released_while_active_is_annunciated_and_judged():
    evs = [BURST, ev("meter-1", "comm_fail", 41 * MIN, state="suppressed", suppressed_by="tx-1a/outage"),
           ev("meter-1", "comm_fail", 70 * MIN, "unsuppressed", "unack")]
    r = judge(scenario(), evs)
    assert r.false_alarms == 1 and r.of("false")[0].transition == "unsuppressed"
    # released after it cleared: back to normal, nothing shown
    evs[2] = ev("meter-1", "comm_fail", 70 * MIN, "unsuppressed", "normal")
    assert judge(scenario(), evs).passed


def test_shelved_and_out_of_service_raises_are_not_judged():
    evs = [BURST, ev("pump-1", "fault", 45 * MIN, state="shelved"),
           ev("pump-2", "fault", 46 * MIN, state="out_of_service")]
    r = judge(scenario(), evs)
    assert r.passed and [a.why for a in r.of("not_annunciated")] == [
        "raised while shelved", "raised while out of service"]
    # the shelve expires while still active: shown then
    r = judge(scenario(), [*evs, ev("pump-1", "fault", 60 * MIN, "shelve_expired", "unack")])
    assert r.false_alarms == 1


def test_non_annunciating_transitions_are_ignored():
    evs = [BURST, ev("zone-a", "burst", 41 * MIN, "chattering"), ev("zone-a", "burst", 42 * MIN, "commented"),
           ev("pump-1", "fault", 43 * MIN, "suppressed", "suppressed")]
    r = judge(scenario(), evs)
    assert r.passed and len(r.alarms) == 1


def test_expected_alarm_hidden_at_its_raise_is_missed_with_the_reason():
    r = judge(scenario(), [ev("zone-a", "burst", 40 * MIN, state="suppressed", suppressed_by="x/y")])
    assert r.misses == 1
    assert "MISSED  burst on zone-a: not raised by 2026-06-01T00:50:00Z (raised while suppressed by x/y" in r.text()


def test_allowed_is_not_false_and_is_summarised():
    allow = [{"condition": "pressure_bar_low"}]
    evs = [BURST, ev("pressure-zone-a", "pressure_bar_low", 35 * MIN),
           ev("inlet-zone-a", "pressure_bar_low", 36 * MIN)]
    r = judge(scenario(allow=allow), evs)
    assert r.passed and [a.verdict for a in r.alarms].count("allowed") == 2
    assert "allowed  pressure_bar_low: 2 on 2 asset(s)" in r.text()


def test_allow_window_after_a_fault():
    allow = [{"condition": "pressure_bar_low", "asset": "pressure-zone-a", "after": "burst-a", "within": "15m"}]
    evs = [BURST, ev("pressure-zone-a", "pressure_bar_low", 10 * MIN),  # before the fault
           ev("pressure-zone-a", "pressure_bar_low", 40 * MIN),  # inside
           ev("pressure-zone-a", "pressure_bar_low", 50 * MIN),  # after 30m + 15m
           ev("inlet-zone-a", "pressure_bar_low", 40 * MIN)]  # other asset
    r = judge(scenario(allow=allow), evs)
    got = {(a.asset, a.ts_ms - T0): a.verdict for a in r.alarms}
    assert got == {("zone-a", 40 * MIN): "expected", ("pressure-zone-a", 10 * MIN): "false",
                   ("pressure-zone-a", 40 * MIN): "allowed", ("pressure-zone-a", 50 * MIN): "false",
                   ("inlet-zone-a", 40 * MIN): "false"}


def test_forbid_wins_over_allow():
    sc = scenario(allow=[{"condition": "outage"}], forbid=[{"condition": "outage", "asset": "tx-1a"}])
    r = judge(sc, [BURST, ev("tx-1a", "outage", 45 * MIN), ev("tx-1b", "outage", 45 * MIN)])
    assert [(a.asset, a.verdict) for a in r.alarms[1:]] == [("tx-1a", "false"), ("tx-1b", "allowed")]
    assert r.of("false")[0].why == "forbidden (forbid[0])"


def test_expected_alarm_raised_again_is_false_unless_allowed():
    evs = [BURST, ev("zone-a", "burst", 50 * MIN, "cleared", "rtn_unack"),
           ev("zone-a", "burst", 55 * MIN)]
    r = judge(scenario(), evs)
    assert r.expected[0].ok and r.false_alarms == 1
    assert r.of("false")[0].why == "annunciated again after the expected one, not allowed"
    assert judge(scenario(allow=[{"condition": "burst", "asset": "zone-a"}]), evs).passed


def test_late_and_outside_the_run():
    r = judge(scenario(), [ev("zone-a", "burst", 55 * MIN), ev("pump-1", "fault", 125 * MIN)])
    assert r.misses == 1 and r.false_alarms == 0 and "LATE    burst on zone-a" in r.text()


def test_chattering_and_flood_figures():
    evs = [BURST]
    evs += [ev("pump-1", "fault", 5 * MIN + k * 20_000, priority="low") for k in range(3)]  # 3 in 40 s
    evs += [ev("pump-2", "fault", 5 * MIN + k * 40_000) for k in range(3)]  # 3 in 80 s: not chattering
    evs += [ev(f"meter-{k}", "comm_fail", 62 * MIN + k * 1000) for k in range(11)]  # window 60-70 min
    f = judge(scenario(allow=[{"condition": "fault"}, {"condition": "comm_fail"}]), evs).figures
    assert f.annunciated == 18 and f.chattering == ["pump-1/fault"]
    assert f.windows == 12 and f.peak_10min == 11 and f.peak_10min_start == "2026-06-01T01:00:00Z"
    assert f.flood_windows == 1 and f.flood_share == pytest.approx(1 / 12, abs=1e-4)
    assert f.per_hour == 9 and f.per_10min_avg == 1.5
    assert f.priority == {"critical": 0, "high": 1, "medium": 14, "low": 3}


def test_window_boundaries_are_fixed_from_the_start():
    anns = [eemua.Annunciation(ts_ms=T0 + 9 * MIN + k * 10_000, alarm_id=f"a{k}", priority="low")
            for k in range(12)]  # 09:00 .. 10:50: 6 in window 0, 6 in window 1
    f = eemua.figures(anns, T0, T0 + 25 * MIN)
    assert f.windows == 3 and f.peak_10min == 6 and f.flood_windows == 0
    assert eemua.CHATTER_COUNT == 3 and eemua.CHATTER_WINDOW_MS == 60_000


def test_same_constants_as_the_alarm_manager():
    from aquavolt.rules import alarms

    assert (eemua.CHATTER_COUNT, eemua.CHATTER_WINDOW_MS) == (alarms.CHATTER_COUNT, alarms.CHATTER_WINDOW_MS)


def test_limits_fail_the_replay_and_are_junit_cases():
    evs = [BURST] + [ev(f"meter-{k}", "comm_fail", 62 * MIN + k * 1000) for k in range(11)]
    evs += [ev("pump-1", "fault", 5 * MIN + k * 20_000) for k in range(3)]
    limits = {"max_per_10min": 10, "max_floods": 0, "max_chattering": 0, "max_per_hour": 100}
    r = judge(scenario(allow=[{"condition": "comm_fail"}, {"condition": "fault"}], limits=limits), evs)
    assert r.false_alarms == 0 and r.limit_failures == 3 and not r.passed
    assert [(lim.name, lim.ok) for lim in r.limits] == [
        ("max_per_10min", False), ("max_floods", False), ("max_chattering", False), ("max_per_hour", True)]
    assert r.text().endswith("FAIL (0 missed, 0 false, 3 limit(s) exceeded)")
    assert "LIMIT   max_per_10min 10: peak 10-min window 11 from 2026-06-01T01:00:00Z (limit 10)" in r.text()
    suite = ET.fromstring(r.junit())
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ["expect burst on zone-a", "no false alarm", "limit max_per_10min 10", "limit max_floods 0",
                     "limit max_chattering 0", "limit max_per_hour 100"]
    assert suite.get("tests") == "6" and suite.get("failures") == "3"


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_alarms"):
        scenario(limits={"max_alarms": 3})
    with pytest.raises(ValueError, match="greater than or equal"):
        scenario(limits={"max_floods": -1})


def test_json_and_junit_content(tmp_path):
    evs = [BURST, ev("pump-1", "fault", 45 * MIN),
           ev("pressure-zone-a", "pressure_bar_low", 35 * MIN),
           ev("meter-1", "comm_fail", 41 * MIN, state="suppressed", suppressed_by="tx-1a/outage")]
    r = judge(scenario(allow=[{"condition": "pressure_bar_low"}]), evs)
    j, x = r.write(tmp_path)
    doc = json.loads(j.read_text())
    assert doc["passed"] is False and doc["misses"] == 0 and doc["false_alarms"] == 1
    assert doc["counts"] == {"expected": 1, "allowed": 1, "false": 1, "not_annunciated": 1}
    assert {a["alarm_id"]: (a["verdict"], a["why"]) for a in doc["alarms"]} == {
        "zone-a/burst": ("expected", "expect[0] burst on zone-a"),
        "pressure-zone-a/pressure_bar_low": ("allowed", "allow[0]"),
        "pump-1/fault": ("false", "neither expected nor allowed"),
        "meter-1/comm_fail": ("not_annunciated", "raised while suppressed by tx-1a/outage")}
    assert doc["figures"]["annunciated"] == 3 and doc["figures"]["priority"]["high"] == 1
    assert doc["expected"][0]["ok"] and doc["expected"][0]["delay_s"] == 600
    suite = ET.parse(x).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    case = {c.get("name"): c for c in suite.findall("testcase")}
    assert case["no false alarm"].find("failure").get("message") == "1 false alarm(s)"
    assert "pump-1/fault raised 2026-06-01T00:45:00Z" in case["no false alarm"].find("failure").text
    assert "allowed pressure_bar_low: 1 on 1 asset(s)" in case["no false alarm"].find("system-out").text
    assert case["expect burst on zone-a"].find("failure") is None


def test_text_report_shape():
    r = judge(scenario(allow=[{"condition": "pressure_bar_low"}]),
              [BURST, ev("pressure-zone-a", "pressure_bar_low", 35 * MIN)])
    lines = r.text().splitlines()
    assert lines[0] == ("replay s.yaml: 2026-06-01T00:00:00Z .. 2026-06-01T02:00:00Z, 2 alarms annunciated, "
                        "0 raised while hidden (not judged)")
    assert lines[1].startswith("  ok      burst on zone-a: raised 2026-06-01T00:40:00Z (after 600 s")
    assert lines[-3].startswith("  EEMUA 191: 0.2 per 10 min on average (1.0 per hour); peak 1 in the 10 min")
    assert lines[-2] == "  priority mix: 0 critical, 1 high, 1 medium, 0 low (0 % / 50 % / 50 % / 0 %)"
    assert lines[-1] == "  PASS"


def test_allow_after_names_a_fault(tmp_path, demo_path):
    doc = {"field": str(demo_path), "start": START, "duration": "1h",
           "faults": [{"id": "trip", "kind": "pump_trip", "target": "pump-1", "at": "10m"}],
           "allow": [{"condition": "fault", "after": "nope", "within": "10m"}]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="no fault 'nope'"):
        load_scenario(p)
    doc["allow"] = [{"condition": "fault", "within": "10m"}]
    p.write_text(yaml.safe_dump(doc))
    sc = load_scenario(p)
    assert sc.allow_window(sc.scenario.allow[0]) == (sc.start + 600, sc.start + 1200)
