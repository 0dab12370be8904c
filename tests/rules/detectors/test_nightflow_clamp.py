"""Net night flow never goes below zero without saying so: golden case
night_flow_small_leak_night_user, where the estimated legitimate night use exceeds what the
zone's inlet measures. The lines carry ``nnf_clamped`` (golden lines); here, the warning
that names the zone, once per clamped night, with the count."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from golden import CASES, run_case


def test_clamped_nights_are_logged_with_the_zone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aquavolt.rules.detectors.nightflow"):
        conds, lines = run_case(CASES / "night_flow_small_leak_night_user")
    warned = [r.getMessage() for r in caplog.records if r.name == "aquavolt.rules.detectors.nightflow"]
    assert len(warned) == 8  # nights 0-7, before the leak
    assert warned[0].startswith("night flow of zone-a on 2026-04-06: the configured legitimate night use "
                                "(0.718 m3/h) exceeds the measured minimum night flow (0.650 m3/h)")
    assert warned[-1].endswith("8 such night(s)")
    assert all("nnf_m3h=-" not in ln for ln in lines)
    assert sum("nnf_clamped=true" in ln for ln in lines) == 8
    assert [c.active for c in conds] == [True]
