"""The package boundaries, from the imports in the source: the kernel imports no component
and not the harness; a component imports only the kernel and itself; the harness imports
only the kernel and itself (it runs the components through their commands). Every package is
imported under the one namespace ``aquavolt`` (``aquavolt.edge``, ``aquavolt.harness``, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "aquavolt"
HARNESS = "harness"
COMPONENTS = ("edge", "collector", "rules", "simulators", "dashboards")
PACKAGES = (KERNEL, *COMPONENTS, HARNESS)
FOLDERS = {KERNEL: ROOT / "aquavolt", HARNESS: ROOT / "aquavolt" / "harness",
           **{c: ROOT / c for c in COMPONENTS}}
OLD_TOP_LEVEL = set(PACKAGES) - {KERNEL}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(package, line) of every absolute import of one of ours in a file: ``aquavolt.edge...`` is
    ``edge``, ``aquavolt.harness...`` is ``harness``, any other ``aquavolt...`` is the kernel; an
    import of a bare ``edge``, ``rules``, ... (outside the namespace) is reported as ``bare:NAME``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == KERNEL:
                sub = parts[1] if len(parts) > 1 else ""
                out.add((sub if sub in OLD_TOP_LEVEL else KERNEL, node.lineno))
            elif parts[0] in OLD_TOP_LEVEL:
                out.add((f"bare:{parts[0]}", node.lineno))
    return out


def allowed(package: str) -> set[str]:
    return {KERNEL} if package == KERNEL else {KERNEL, package}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_it_may(package):
    files = sorted(FOLDERS[package].rglob("*.py"))
    if package == KERNEL:
        files = [f for f in files if FOLDERS[HARNESS] not in f.parents]
    assert files, f"no sources under {package}/"
    bad = [f"{f.relative_to(ROOT)}:{line}: imports {top}"
           for f in files for top, line in sorted(imported_packages(f))
           if top not in allowed(package)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_crossing(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom aquavolt.simulators.faults import FaultBook\n\ndef g():\n"
                 "    import aquavolt.harness.stack\n    from aquavolt.clock import Clock\n    import rules.alarms\n")
    assert imported_packages(f) == {("simulators", 2), ("harness", 5), ("aquavolt", 6), ("bare:rules", 7)}


def test_nothing_imports_outside_the_namespace():
    """Tests, benchmarks and examples too: ``import rules`` would find another distribution's
    top-level ``rules`` (django-rules), or nothing once installed from the wheel."""
    files = [f for d in (*FOLDERS.values(), ROOT / "tests", ROOT / "bench", ROOT / "examples") for f in d.rglob("*.py")]
    bare = [f"{f.relative_to(ROOT)}:{line}: imports {top[5:]}"
            for f in sorted(set(files)) for top, line in sorted(imported_packages(f)) if top.startswith("bare:")]
    assert not bare, "\n".join(bare)
