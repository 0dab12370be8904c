"""The configuration samples that rules/README.md shows are valid."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from aquavolt.rulecfg import RulesConfig
from aquavolt.rules.notify import NotifyConfig

README = Path(__file__).resolve().parents[2] / "rules" / "README.md"


def test_readme_samples_validate() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    rules = RulesConfig.model_validate(yaml.safe_load(blocks[0])["rules"])
    assert rules.limits[1].armed_by == "running"
    notify = NotifyConfig.model_validate(yaml.safe_load(blocks[1]))
    assert notify.email is not None and notify.email.escalate_to == ["manager@utility.example"]
