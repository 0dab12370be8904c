"""Golden cases of the streaming detectors: each folder of cases/ is replayed through the
detectors built from its field, and the conditions (and InfluxDB lines) must be exactly
the expected ones, traps included (legitimate night users, an industrial meter with
expected continuous flow, bad reads, a meter link lost while its transformer is live,
a demand step without pressure drop, a household whose quiet hour moves from night to night,
a small leak in a small zone whose estimated night use exceeds its measured flow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from golden import CASES, check

NAMES = sorted(p.name for p in CASES.iterdir() if (p / "input.csv").exists())


def test_every_case_has_expectations() -> None:
    assert len(NAMES) >= 14
    for n in NAMES:
        assert (CASES / n / "case.yaml").exists(), n
        assert (CASES / n / "expected.json").exists(), n


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str) -> None:
    errors = check(CASES / name)
    assert not errors, "\n".join(errors)
