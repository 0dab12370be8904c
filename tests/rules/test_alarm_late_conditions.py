"""A condition stamped before the newest one an alarm has seen never changes its state: data
sent again after an outage or a restart (``historical``, later than the allowed lateness)
reaches the rules after newer readings. Before: a pump's trip was cleared by its readings of
the minutes before the trip, resent by the gateway, and the operator's acknowledgement then
put the alarm back to normal while the pump was still tripped."""

from __future__ import annotations

from aquavolt.rules.alarms import AlarmManager
from aquavolt.rules.api import Condition, Priority

T = 1_780_301_026_922


def test_an_older_clear_does_not_clear_a_newer_raise() -> None:
    m = AlarmManager()
    raised = m.apply(Condition("pump-1", "fault", True, T, Priority.HIGH, "Pump tripped"))
    assert [e.transition for e in raised] == ["raised"]
    assert m.apply(Condition("pump-1", "fault", False, T - 231_553)) == []  # resent, before the trip
    a = m.alarms["pump-1/fault"]
    assert a.active and str(a.state) == "unack" and m.stale_conditions == 1
    events, _ = m.acknowledge(["pump-1/fault"], m.seq, "amina", T + 1000, "standby on duty")
    assert [(e.transition, str(e.state)) for e in events] == [("acknowledged", "acked")]
    # a newer clear still clears; an older raise after it does not raise again
    assert [e.transition for e in m.apply(Condition("pump-1", "fault", False, T + 60_000))] == ["cleared"]
    assert m.apply(Condition("pump-1", "fault", True, T + 30_000, Priority.HIGH)) == []
    assert not m.alarms["pump-1/fault"].active and m.stale_conditions == 2


def test_the_same_state_restated_late_changes_nothing_and_is_not_stale() -> None:
    m = AlarmManager()
    m.apply(Condition("tank", "level_m_high", True, T, Priority.HIGH))
    assert m.apply(Condition("tank", "level_m_high", True, T - 5000, Priority.HIGH)) == []
    assert m.stale_conditions == 0 and m.alarms["tank/level_m_high"].active
