"""Leak, outage and over-consumption detectors, built from a field.

``build_detectors(loaded)`` returns the detector rules (``rules.api.Rule``) for a field.
"""

from __future__ import annotations

from typing import Any

from aquavolt.config import LoadedField


def build_detectors(loaded: LoadedField) -> list[Any]:
    """Every detector rule for this field."""
    return []
