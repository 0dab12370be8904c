"""JSON Schemas of the wire contract, generated from the models in :mod:`aquavolt.wire`."""

from __future__ import annotations

import json
from pathlib import Path

from aquavolt.wire import WIRE_MODELS, WIRE_VERSION


def schema_texts() -> dict[str, str]:
    """File name -> JSON Schema text, for every payload of the contract."""
    out = {}
    for name, model in WIRE_MODELS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://aquavolt.org/schemas/v{WIRE_VERSION}/{name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in schema_texts().items():
        path = folder / name
        path.write_text(text)
        paths.append(path)
    return paths
