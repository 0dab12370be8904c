"""Golden-case runner for the streaming detectors (imported by test_golden.py).

A case folder holds ``case.yaml`` (description, field, rules overrides, detectors to run,
end of replay), ``input.csv`` (ts_ms, device, point, value, quality) written by
make_cases.py, ``expected.json`` (the conditions, in order; each entry's keys are checked,
numbers to 1e-3 relative) and optionally ``expected_lines.txt`` (InfluxDB lines).
The replay feeds samples in event-time order and ticks every rule at each new timestamp
and every ``tick_s`` (60 s) in between, as the engine's watermark would.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from aquavolt.config import LoadedField, load_field
from aquavolt.rulecfg import RulesConfig
from aquavolt.rules.api import Condition, Sample
from aquavolt.rules.detectors import build_detectors, drain_lines
from aquavolt.wire import Quality

ROOT = Path(__file__).resolve().parents[3]
CASES = Path(__file__).parent / "cases"


@cache
def _field(path: str) -> LoadedField:
    return load_field(path)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def case_field(folder: Path, spec: dict[str, Any]) -> LoadedField:
    name = spec.get("field", "demo-town")
    path = ROOT / "examples/demo-town.yaml" if name == "demo-town" else folder / name
    loaded = _field(str(path))
    if not spec.get("rules"):
        return loaded
    rules = RulesConfig.model_validate(_merge(loaded.field.rules.model_dump(), spec["rules"]))
    return dataclasses.replace(loaded, field=loaded.field.model_copy(update={"rules": rules}))


def _value(text: str) -> float | bool | str | None:
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def read_samples(path: Path) -> list[Sample]:
    with path.open() as fh:
        return [Sample("gw", r["device"], r["point"], _value(r["value"]), int(r["ts_ms"]), Quality(r["quality"]))
                for r in csv.DictReader(fh)]


def run_case(folder: Path) -> tuple[list[Condition], list[str]]:
    spec = yaml.safe_load((folder / "case.yaml").read_text())
    loaded = case_field(folder, spec)
    wanted = spec["detectors"]
    rules = [r for r in build_detectors(loaded) if any(r.name.startswith(w) for w in wanted)]
    assert rules, f"no detector named {wanted}"
    states = [r.init() for r in rules]
    samples = read_samples(folder / "input.csv")
    tick_ms = int(spec.get("tick_s", 60) * 1000)
    end = samples[-1].ts_ms + int(spec.get("after_s", 0) * 1000)
    conds: list[Condition] = []
    lines: list[str] = []

    def tick(now: int) -> None:
        for i, r in enumerate(rules):
            states[i], out = r.tick(states[i], now)
            conds.extend(out)
            states[i], ls = drain_lines(r, states[i])
            lines.extend(ls)

    last = samples[0].ts_ms
    for s in samples:
        while last + tick_ms < s.ts_ms:
            last += tick_ms
            tick(last)
        if s.ts_ms > last:
            tick(s.ts_ms)
            last = s.ts_ms
        for i, r in enumerate(rules):
            if r.wants(s.device, s.point):
                states[i], out = r.step(states[i], s)
                conds.extend(out)
    while last < end:
        last = min(last + tick_ms, end)
        tick(last)
    return conds, lines


def as_dict(c: Condition) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    d["priority"] = str(c.priority)
    return d


def matches(expected: Any, actual: Any, where: str = "") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a mapping, got {actual!r}"]
        errs: list[str] = []
        for k, v in expected.items():
            if k not in actual:
                errs.append(f"{where}.{k}: missing")
            else:
                errs += matches(v, actual[k], f"{where}.{k}")
        return errs
    if isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        ok = math.isclose(expected, actual, rel_tol=1e-3, abs_tol=1e-6)
        return [] if ok else [f"{where}: expected {expected}, got {actual}"]
    return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]


def check(folder: Path) -> list[str]:
    conds, lines = run_case(folder)
    expected = json.loads((folder / "expected.json").read_text())
    got = [as_dict(c) for c in conds]
    errs = []
    if len(got) != len(expected):
        errs.append(f"{len(got)} conditions, expected {len(expected)}: "
                    + json.dumps([{k: g[k] for k in ('asset', 'condition', 'active', 'ts_ms')} for g in got]))
    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        errs += matches(e, g, f"[{i}]")
    lines_file = folder / "expected_lines.txt"
    if lines_file.exists():
        want = [ln for ln in lines_file.read_text().splitlines() if ln and not ln.startswith("#")]
        if want != lines:
            errs.append("lines differ:\n  want " + "\n  want ".join(want) + "\n  got  " + "\n  got  ".join(lines))
    return errs
