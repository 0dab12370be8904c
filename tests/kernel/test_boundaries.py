"""The package boundaries, from the imports in the source: the kernel imports no component
and not the harness; a component imports only the kernel and itself; the harness imports
only the kernel and itself (it runs the components through their commands)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "aquavolt"
HARNESS = "harness"
COMPONENTS = ("edge", "collector", "rules", "simulators", "dashboards")
PACKAGES = (KERNEL, *COMPONENTS, HARNESS)


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import of one of ours in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                out.add((top, node.lineno))
    return out


def allowed(package: str) -> set[str]:
    return {KERNEL} if package == KERNEL else {KERNEL, package}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_it_may(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    bad = [f"{f.relative_to(ROOT)}:{line}: imports {top}"
           for f in files for top, line in sorted(imported_packages(f))
           if top not in allowed(package)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_crossing(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom simulators.faults import FaultBook\n\ndef g():\n    import harness.stack\n")
    assert imported_packages(f) == {("simulators", 2), ("harness", 5)}
