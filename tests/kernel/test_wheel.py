"""The built wheel with only the edge extra, in a fresh virtual environment, from outside the
repository: the gateway's commands work, and nothing a gateway does not need is installed
(no numpy, no aiohttp, no psutil). Needs the package index pip is configured with (or its
local wheel cache) for the edge's dependencies, pinned by constraints.txt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_edge_extra_from_the_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    src = tmp_path / "src"  # a copy: building leaves build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "var", "build", "tests", "*.egg-info",
                                                              "__pycache__", ".*_cache"))
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, env=env, cwd=tmp_path, timeout=120)
    [wheel] = (tmp_path / "dist").glob("aquavolt-*.whl")
    with zipfile.ZipFile(wheel) as zf:  # one import namespace: nothing beside aquavolt/
        tops = {n.split("/")[0] for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
        assert tops == {"aquavolt"}, tops
        for inside in ("aquavolt/edge/agent.py", "aquavolt/rules/console/static/console.js",
                       "aquavolt/harness/stack.py", "aquavolt/profiles/av_em1.yaml"):
            assert inside in zf.namelist(), inside
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "-c", str(ROOT / "constraints.txt"),
                    f"{wheel}[edge]"], check=True, env=env, cwd=tmp_path, timeout=300)

    listing = "from importlib.metadata import distributions as d; print(*{x.metadata['Name'] for x in d()})"
    installed = subprocess.run([str(python), "-c", listing], check=True, env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60).stdout.lower()
    names = set(installed.replace("_", "-").split())
    assert {"aquavolt", "pymodbus", "asyncua", "paho-mqtt"} <= names
    assert names.isdisjoint({"numpy", "aiohttp", "psutil", "matplotlib"}), names

    aquavolt = venv / "bin" / "aquavolt"
    run = subprocess.run([str(aquavolt), "edge", "--help"], check=False, env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: aquavolt edge"), run.stderr
    run = subprocess.run([str(aquavolt), "check", str(ROOT / "examples/demo-town.yaml")], check=False, env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and ": ok: field demo-town" in run.stdout, run.stderr
    # a command of a role not installed: one line naming the extra, no traceback
    for argv, extra in ((["dashboards", "build", str(ROOT / "examples/demo-town.yaml"), "-o", "out"], "dashboards"),
                        (["rules", "run", str(ROOT / "examples/demo-town.yaml"), "--state-dir", "r"], "server")):
        run = subprocess.run([str(aquavolt), *argv], check=False, env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        line = run.stderr.strip().splitlines()[-1]
        assert line.startswith(f"aquavolt {argv[0]} {argv[1]}: needs the '{extra}' extra"), run.stderr
    # the package imported is the installed one, not the repository's
    where = subprocess.run([str(python), "-c", "import aquavolt, aquavolt.edge as e; print(aquavolt.__file__, e.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60)
    assert str(ROOT) not in where.stdout and "site-packages/aquavolt/edge/" in where.stdout, where.stdout
    bare = subprocess.run([str(python), "-c", "import edge"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=60)
    assert "No module named 'edge'" in bare.stderr, bare.stderr
