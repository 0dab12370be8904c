"""Packaging: every library a package imports is declared in the extra of its role (the
kernel's in the base dependencies), the edge extra stays lean, one version source, and the
constraints file pins every declared requirement."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import aquavolt

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the extras a package's imports must be found in (the base dependencies always count)
ROLES = {"aquavolt": [], "edge": ["edge"], "collector": ["server"], "rules": ["server"],
         "simulators": ["sim"], "harness": ["all"], "dashboards": ["dashboards"]}
DIST = {"yaml": "pyyaml", "paho": "paho-mqtt", "serial": "pyserial", "grafana_client": "grafana-client",
        "grafana_foundation_sdk": "grafana-foundation-sdk", "google": "protobuf"}


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]).lower()


def _declared(extra: str | None) -> set[str]:
    """Distributions of the base dependencies plus ``extra``, following aquavolt[...] self-references."""
    reqs = list(PROJECT["dependencies"])
    todo = [extra] if extra else []
    while todo:
        for req in PROJECT["optional-dependencies"][todo.pop()]:
            m = re.match(r"aquavolt\[(.*)\]", req)
            if m:
                todo += m.group(1).split(",")
            else:
                reqs.append(req)
    return {_name(r) for r in reqs}


def _imports(package: str) -> set[str]:
    """Third-party top-level modules imported anywhere in ``package``."""
    found = set()
    folder = ROOT / "aquavolt" / "harness" if package == "harness" else ROOT / package
    paths = [p for p in folder.rglob("*.py") if package != "aquavolt" or "harness" not in p.parts]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names}
    return {m for m in found if m not in sys.stdlib_module_names and m not in ROLES}


def test_every_imported_library_is_declared_in_its_role() -> None:
    missing = {}
    for package, extras in ROLES.items():
        declared = set().union(*[_declared(e) for e in extras]) if extras else _declared(None)
        need = {DIST.get(m, m.replace("_", "-")) for m in _imports(package)}
        if need - declared:
            missing[package] = sorted(need - declared)
    assert missing == {}


def test_edge_extra_is_lean() -> None:
    assert {"numpy", "aiohttp", "psutil", "matplotlib"}.isdisjoint(_declared("edge"))
    assert {"numpy", "aiohttp", "psutil", "pymodbus", "asyncua"}.isdisjoint(_declared(None))


def test_one_version_source() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    dynamic = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "aquavolt.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", aquavolt.__version__)


def test_constraints_pin_every_declared_requirement() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    declared = set().union(*[_declared(e) for e in PROJECT["optional-dependencies"]])
    assert declared - set(pins) == set()
    for req in [*PROJECT["dependencies"], *[r for v in PROJECT["optional-dependencies"].values() for r in v]]:
        m = re.match(r"([^=<>!~ ]+)==(\S+)", req)
        if m:  # an exact requirement and its pin agree
            assert pins[_name(m.group(1))] == m.group(2), req


def test_every_folder_is_packaged_under_the_namespace() -> None:
    """Each folder of sources or package data is listed in tool.setuptools.packages, mapped
    under ``aquavolt``: a folder forgotten there would be missing from the wheel."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    dirs = {"aquavolt": "aquavolt", **{f"aquavolt.{c}": c for c in aquavolt.COMPONENTS}}
    assert tool["package-dir"] == dirs
    data = {"__init__.py", *(f"x.{e[2:]}" for e in tool["package-data"]["*"])}
    found = set()
    for name, folder in dirs.items():
        for d in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts:
                continue
            if any(f.name == "__init__.py" or f"x{f.suffix}" in data for f in d.iterdir() if f.is_file()):
                rel = d.relative_to(ROOT / folder).parts
                found.add(".".join((name, *rel)))
    assert found == listed, (sorted(found - listed), sorted(listed - found))
