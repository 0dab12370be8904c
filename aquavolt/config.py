"""Loading configuration files with errors that name the file, the path and the reason.

``load_field(path)`` reads a field file and its device profiles, validates them with the
models, checks every cross-reference, and raises :class:`ConfigError` listing every
problem found, for example::

    examples/demo-town.yaml:212: gateways[2].devices[5].unit_id: 300 is outside 1..247
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.field import FieldConfig
from aquavolt.profiles import PROFILES_DIR, ModbusProfile, OpcuaProfile, Profile

M = TypeVar("M", bound=BaseModel)

_UNION_TAGS = {"modbus_tcp", "modbus_rtu", "opcua", "modbus"}


def format_path(loc: Sequence[int | str]) -> str:
    """('gateways', 2, 'devices', 5, 'unit_id') -> 'gateways[2].devices[5].unit_id'."""
    out = ""
    prev_int = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            prev_int = True
            continue
        if (prev_int or not out) and part in _UNION_TAGS:
            prev_int = False
            continue  # pydantic names the union member; the user never wrote it
        out += f".{part}" if out else part
        prev_int = False
    return out


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when present (five times faster on a field of thousands of lines)."""


class _Lines:
    """Maps a path inside a YAML document to its line number (parsed on first use)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._parsed = False
        self._root: yaml.Node | None = None

    def line(self, loc: Sequence[int | str]) -> int | None:
        if not self._parsed:
            self._parsed = True
            try:
                self._root = yaml.compose(self._text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                self._root = None
        node = self._root
        last = None
        for part in loc:
            if node is None:
                break
            last = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
                if found is None and part in _UNION_TAGS:
                    continue  # pydantic's name of the union member
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if 0 <= part < len(node.value) else None
            else:
                node = None
        return node.start_mark.line + 1 if node is not None else last


def _read_yaml(path: Path) -> tuple[Any, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from exc
    try:
        return yaml.load(text, Loader=_LOADER), text
    except yaml.YAMLError:
        pass
    try:  # the pure-Python parser words its errors better: let it tell
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        name = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = f"not valid YAML: {getattr(exc, 'problem', exc)}"
        raise ConfigError([ConfigIssue(name, "", reason)]) from exc


def _issues(exc: ValidationError, file: str, lines: _Lines) -> list[ConfigIssue]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            key = str(ctx.get("discriminator", "kind")).strip("'")
            msg = f"{key} {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
        elif "input" in err and not isinstance(err["input"], dict | list):
            shown = repr(err["input"])
            if len(shown) < 60:
                msg = f"{msg} (got {shown})"
        line = lines.line(loc)
        name = f"{file}:{line}" if line else file
        out.append(ConfigIssue(name, format_path(loc), msg))
    return out


def load_model(path: Path | str, model: type[M]) -> M:
    """Read a YAML file into a frozen model, or raise ConfigError naming every problem."""
    path = Path(path)
    data, text = _read_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, str(path), _Lines(text))) from exc


_PROFILE = TypeAdapter(Profile)


def load_profile(path: Path) -> ModbusProfile | OpcuaProfile:
    data, text = _read_yaml(path)
    try:
        return _PROFILE.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, str(path), _Lines(text))) from exc


def load_profiles(dirs: Iterable[Path]) -> dict[str, ModbusProfile | OpcuaProfile]:
    """Every profile of the given folders by id (later folders override earlier ones)."""
    profiles: dict[str, ModbusProfile | OpcuaProfile] = {}
    issues: list[ConfigIssue] = []
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")):
            try:
                prof = load_profile(path)
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            if prof.id != path.stem:
                issues.append(ConfigIssue(str(path), "id", f"id {prof.id!r} differs from file name"))
            profiles[prof.id] = prof
    if issues:
        raise ConfigError(issues)
    return profiles


@dataclass(frozen=True)
class LoadedField:
    """A validated field with its device profiles."""

    path: Path
    field: FieldConfig
    profiles: dict[str, ModbusProfile | OpcuaProfile]

    def profile_of(self, device_id: str) -> ModbusProfile | OpcuaProfile:
        return self.profiles[self.field.devices[device_id][1].profile]


def load_field(path: Path | str) -> LoadedField:
    """Load and fully check a field file; raise ConfigError listing every problem."""
    from aquavolt.fieldcheck import cross_check

    path = Path(path)
    data, text = _read_yaml(path)
    lines = _Lines(text)
    try:
        field = FieldConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, str(path), lines)) from exc
    dirs = [PROFILES_DIR]
    if field.profiles_dir:
        extra = (path.parent / field.profiles_dir).resolve()
        if not extra.is_dir():
            raise ConfigError([ConfigIssue(str(path), "profiles_dir", f"no folder {extra}")])
        dirs.append(extra)
    profiles = load_profiles(dirs)
    problems = [
        ConfigIssue(f"{path}:{ln}" if (ln := lines.line(loc)) else str(path), format_path(loc), why)
        for loc, why in cross_check(field, profiles)
    ]
    if problems:
        raise ConfigError(problems)
    return LoadedField(path, field, profiles)
