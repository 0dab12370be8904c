"""Golden cases of the rules core: one folder per case under cases/ (config, input,
expected alarm events). The core is pure: no server runs here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aquavolt.rules.core import Core
from aquavolt.rules.replay import load_case_field, project, run_case, run_events

CASES = Path(__file__).parent / "cases"
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())

# every generic rule and every lifecycle transition has a case
REQUIRED = {
    "limit-high-deadband", "limit-low-delays", "limit-delay-by-watermark", "rate-of-change",
    "discrete-states", "stale", "bad-quality", "comm-and-gateway", "suppression-by-state",
    "suppression-by-topology", "shelve-expiry", "ack-what-was-seen", "chattering",
    "out-of-service-and-comment", "comm-fail-hold-off-outage", "comm-fail-bus-rollup",
    "breaker-trip-outage-story",
}


def test_every_required_case_exists() -> None:
    assert set(NAMES) >= REQUIRED


@pytest.mark.parametrize("name", NAMES)
def test_case(name: str) -> None:
    expected = yaml.safe_load((CASES / name / "expected.yaml").read_text())
    assert run_case(CASES / name) == expected


def test_transitions_covered() -> None:
    seen = {(r["transition"], r["state"]) for n in NAMES
            for r in yaml.safe_load((CASES / n / "expected.yaml").read_text())}
    states = {s for _t, s in seen}
    assert {"unack", "acked", "rtn_unack", "normal", "shelved", "suppressed", "out_of_service"} <= states
    transitions = {t for t, _s in seen}
    assert {"raised", "cleared", "acknowledged", "shelved", "unshelved", "shelve_expired", "suppressed",
            "unsuppressed", "chattering", "commented", "removed_from_service",
            "returned_to_service"} <= transitions


@pytest.mark.parametrize("name", ["limit-low-delays", "limit-delay-by-watermark", "stale",
                                  "discrete-states", "suppression-by-state", "comm-fail-hold-off-outage",
                                  "comm-fail-bus-rollup"])
def test_tick_granularity_does_not_change_event_times(name: str) -> None:
    """A tick grid of 7 s instead of 1 ms raises the same alarms at the same event times."""
    events = yaml.safe_load((CASES / name / "input.yaml").read_text())
    runs = []
    for every in (0, 7000):
        core = Core(load_case_field(CASES / name), tick_every_ms=every)
        rows = project(run_events(core, events))
        runs.append(sorted((r["ts_ms"], r["alarm_id"], r["transition"]) for r in rows))
    assert runs[0] == runs[1]
    assert runs[0]


def test_ack_reports_what_it_skipped() -> None:
    core = Core(load_case_field(CASES / "ack-what-was-seen"), tick_every_ms=0)
    run_events(core, [
        {"at": 0, "batch": {"device": "pump-1", "readings": [{"point": "fault", "value": True}]}},
        {"at": 1, "batch": {"device": "feeder-1-bay", "readings": [{"point": "breaker_closed", "value": False}]}},
    ])
    events, skipped = core.manager.acknowledge(["pump-1/fault", "feeder-1-bay/breaker_closed", "nope/x"],
                                               1, "amina", 5)
    assert [e.alarm_id for e in events] == ["pump-1/fault"]
    assert set(skipped) == {"feeder-1-bay/breaker_closed", "nope/x"}
    assert "raised again" in skipped["feeder-1-bay/breaker_closed"]


def test_recurrence_updates_one_alarm() -> None:
    core = Core(load_case_field(CASES / "chattering"), tick_every_ms=0)
    run_events(core, [{"at": t * 100_000, "batch": {"device": "pump-1", "readings": [
        {"point": "fault", "value": t % 2 == 0}]}} for t in range(6)])
    assert list(core.manager.alarms) == ["pump-1/fault"]
    assert core.manager.alarms["pump-1/fault"].count == 3
    assert not core.manager.alarms["pump-1/fault"].chattering


def test_outage_gives_one_alarm_not_one_per_meter() -> None:
    """Hold-off and release: no meter's comm_fail is annunciated (raised or unsuppressed into
    unack) while its transformer's outage explains it, nor just after."""
    rows = run_case(CASES / "comm-fail-hold-off-outage")
    shown = [r for r in rows if r["state"] == "unack" and r["transition"] != "sustained"]  # an update
    assert [(r["alarm_id"], r["ts_ms"]) for r in shown] == [
        ("tx-1/outage", 100_500), ("tx-1/outage", 600_100), ("em-2/comm_fail", 820_000)]  # em-2 stayed silent: annunciated once polled again (60 s) plus the 60 s margin


def test_bus_and_gateway_loss_give_one_alarm_each() -> None:
    rows = run_case(CASES / "comm-fail-bus-rollup")
    shown = [(r["alarm_id"], r["transition"]) for r in rows if r["state"] == "unack"]
    assert shown == [("gw-1.conc/comm_fail", "raised"), ("gw-1/comm_fail", "raised")]


def test_a_breaker_trip_and_its_outage_are_one_incident_and_the_outage_tells_its_story() -> None:
    """The 25-minute trip: the outage is the incident; the breaker trip seen before the
    outage's declaration period ended is grouped under it (``parent``, suppressed) once it is
    raised. The outage is sustained at 5 minutes on the same alarm, and its clear says when
    supply came back, how long it was out and the final class. The late bay reading after the
    restoration opens no second outage."""
    rows = run_case(CASES / "breaker-trip-outage-story")
    raised = [r["alarm_id"] for r in rows if r["transition"] == "raised"]
    assert raised == ["feeder-1-bay/breaker_closed", "feeder-1/outage"]
    breaker = [r for r in rows if r["alarm_id"] == "feeder-1-bay/breaker_closed"]
    assert [(r["transition"], r.get("parent")) for r in breaker] == [
        ("raised", None), ("suppressed", "feeder-1/outage"), ("unsuppressed", "feeder-1/outage")]
    story = [r for r in rows if r["alarm_id"] == "feeder-1/outage"]
    assert [r["transition"] for r in story] == ["raised", "sustained", "cleared"]
    assert [r["outage"]["classification"] for r in story] == ["momentary", "sustained", "sustained"]
    assert story[1]["ts_ms"] == 400_000  # 5 minutes after the loss at 100 s
    assert story[2]["outage"]["restored_ms"] == 1_600_000
    assert story[2]["outage"]["duration_s"] == 1500.0
    assert story[2]["outage"]["customers_affected"] == 2


def test_a_breaker_alarm_is_grouped_only_under_its_feeders_outage() -> None:
    """The gateway going offline hides loss-of-data alarms, not the breaker trip it reported."""
    core = Core(load_case_field(CASES / "breaker-trip-outage-story"), tick_every_ms=0)
    rows = project(run_events(core, [
        {"at": 0, "gateway_status": {"gateway": "gw-1", "state": "online", "bd_seq": 0}},
        {"at": 1000, "batch": {"device": "feeder-1-bay", "readings": [{"point": "breaker_closed", "value": False}]}},
        {"at": 2000, "gateway_status": {"gateway": "gw-1", "state": "offline", "bd_seq": 0}},
        {"at": 3000, "tick": True},
    ]))
    breaker = [(r["transition"], r["state"]) for r in rows if r["alarm_id"] == "feeder-1-bay/breaker_closed"]
    assert breaker == [("raised", "unack")]
