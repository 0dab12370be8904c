"""Leak, outage and over-consumption detectors, built from a field (docs/detection.md).

``build_detectors(loaded)`` returns the detector rules (``rules.api.Rule``) for a field:
night flow, burst and water balance per zone; continuous flow behind customer meters;
outage roll-up and power quality for the electricity network. The engine feeds them like
any rule, plus the device status as a sample: ``Sample(gateway, device, "_status",
"comm_fail" | "online" | "offline", ts_ms)``. Rules that also produce InfluxDB lines
(``night_flow``, ``water_balance``) have ``drain_lines(state) -> (state, lines)``.
Over-consumption is not a streaming rule: see :mod:`rules.detectors.overconsumption`.
"""

from __future__ import annotations

from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rules.detectors.balance import WaterBalanceRule
from aquavolt.rules.detectors.burst import BurstRule
from aquavolt.rules.detectors.common import STATUS_POINT, MetricsRule
from aquavolt.rules.detectors.continuous import ContinuousFlowRule
from aquavolt.rules.detectors.nightflow import NightFlowRule
from aquavolt.rules.detectors.outage import OutageRule
from aquavolt.rules.detectors.quality import PowerQualityRule

__all__ = ["STATUS_POINT", "MetricsRule", "build_detectors", "drain_lines"]


def build_detectors(loaded: LoadedField) -> list[Any]:
    """Every detector rule for this field."""
    rules: list[Any] = []
    rules += NightFlowRule.for_field(loaded)
    rules += BurstRule.for_field(loaded)
    rules += WaterBalanceRule.for_field(loaded)
    if loaded.field.customers:
        rules.append(ContinuousFlowRule.from_field(loaded))
    if loaded.field.electricity.substations:
        rules.append(OutageRule(loaded))
        rules.append(PowerQualityRule(loaded))
    return rules


def drain_lines(rule: Any, state: Any) -> tuple[Any, list[str]]:
    """Line-protocol lines a rule produced since the last call (none for most rules)."""
    drain = getattr(rule, "drain_lines", None)
    if drain is None:
        return state, []
    out: tuple[Any, list[str]] = drain(state)
    return out
