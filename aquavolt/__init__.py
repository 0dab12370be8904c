"""aquavolt kernel: what every component shares.

The kernel holds the field model, device profiles and the register codec, the wire
contract, the clock (lockstep included), connection settings for MQTT and InfluxDB, the
scenario file and fault spec, and logging setup. Components (``aquavolt.edge``,
``aquavolt.collector``, ``aquavolt.rules``, ``aquavolt.simulators``, ``aquavolt.dashboards``)
import the kernel and never each other. The harness (``aquavolt.harness``: the demo and
replays) runs them as processes through their ``aquavolt`` commands and imports only the
kernel too; the kernel imports neither.

Every package is imported under this one namespace. An installed wheel holds the components
inside this package; in a source checkout they stay in the repository's top-level folders
(``edge/``, ``collector/``, ...) and the finder below maps ``aquavolt.<component>`` to them,
for the checkout this file belongs to (never a folder of the same name elsewhere).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"  # the only place: pyproject.toml reads it (tool.setuptools.dynamic)

COMPONENTS = ("edge", "collector", "rules", "simulators", "dashboards")


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """``aquavolt.edge`` -> ``<checkout>/edge``, when this kernel runs from a source checkout."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        head, _, name = fullname.partition(".")
        if head != __name__ or name not in COMPONENTS:
            return None
        init = self.root / name / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init,
                                                      submodule_search_locations=[str(init.parent)])


def _checkout_root() -> Path | None:
    here = Path(__file__).resolve().parent
    root = here.parent
    installed = (here / "edge").is_dir()  # a wheel: the components are inside this package
    if not installed and (root / "pyproject.toml").is_file() and (root / "edge" / "cli.py").is_file():
        return root
    return None


_root = _checkout_root()
if _root is not None and not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutFinder(_root))
