"""Golden tests of ``aquavolt check``: one folder per case under cases/check/, with the
field file and the exact messages expected (empty for a valid field)."""

import re
import shutil
from pathlib import Path

import pytest

from aquavolt.cli import main

CASES = Path(__file__).parent / "cases" / "check"
ROOT = Path(__file__).parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(CASES / case)
    expected = (CASES / case / "expected.txt").read_text().strip()
    status = main(["check", "field.yaml"])
    err = capsys.readouterr().err
    got = [ln for ln in err.splitlines() if not ln.endswith("error(s)")]
    assert "\n".join(got).strip() == expected
    assert status == (1 if expected else 0)


def test_demo_field_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"4 gateways, \d{3} devices, 2 zones, 1 substations, 2\d\d customers", out)


def test_broken_copy_of_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DEMO.read_text()
    text = text.replace("unit_id: 5,", "unit_id: 300,", 1)  # inlet-zone-b
    text = text.replace("profile: av_em1", "profile: av_em9", 1)  # first customer's meter
    text = text.replace("transformer: tx-1a", "transformer: tx-9z", 1)
    broken = tmp_path / "demo-broken.yaml"
    broken.write_text(text)
    shutil.copy(DEMO, tmp_path / "unused.yaml")
    assert main(["check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"demo-broken\.yaml:\d+: gateways\[0\]\.devices\[4\]\.unit_id: unit id 300 is outside 1\.\.247", err)
    assert re.search(r"demo-broken\.yaml:\d+: gateways\[2\]\.devices\[1\]\.profile: no device profile 'av_em9'", err)
    assert re.search(r"demo-broken\.yaml:\d+: customers\[0\]\.transformer: no transformer 'tx-9z'", err)
    assert "3 error(s)" in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "/nonexistent/field.yaml"]) == 1
    assert "/nonexistent/field.yaml: cannot read: No such file or directory" in capsys.readouterr().err


def test_broken_profile_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "my_meter.yaml").write_text(
        "id: my_meter\nprotocol: modbus\npoints:\n"
        "  - {name: a_v, address: 0, table: input, type: float32}\n"
        "  - {name: b_v, address: 1, table: input, type: float32}\n"
    )
    field = (CASES / "valid-mini" / "field.yaml").read_text() + "profiles_dir: profiles\n"
    (tmp_path / "field.yaml").write_text(field)
    assert main(["check", str(tmp_path / "field.yaml")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"profiles/my_meter\.yaml:\d+: points a_v and b_v overlap in input registers at 1", err)
