"""The written contract matches the models: schemas regenerate identically, and the
document names every topic and payload."""

from pathlib import Path

from aquavolt.schemas import schema_texts
from aquavolt.wire import WIRE_MODELS, Topics

DOCS = Path(__file__).parents[2] / "docs"


def test_json_schemas_match_models() -> None:
    expected = schema_texts()
    on_disk = {p.name: p.read_text() for p in (DOCS / "schemas").glob("*.json")}
    assert set(on_disk) == set(expected), "run: aquavolt schemas --out docs/schemas"
    for name, text in expected.items():
        assert on_disk[name] == text, f"docs/schemas/{name} is out of date: run aquavolt schemas"


def test_wire_format_document_names_every_topic_and_payload() -> None:
    doc = (DOCS / "wire-format.md").read_text()
    t = Topics("{prefix}")
    for topic in (t.gateway_status("{gateway}"), t.health("{gateway}"), t.data("{gateway}", "{device}"),
                  t.device_status("{gateway}", "{device}"), t.command("{gateway}", "{device}"),
                  t.reply("{gateway}", "{device}"), t.alarm("{asset}", "{condition}"),
                  t.alarm_events, t.customer_alerts, t.deadletter("{component}"), t.sim_fault,
                  t.progress("{component}"), t.time_grant, t.time_done("{participant}")):
        assert f"`{topic}`" in doc, topic
    for name in WIRE_MODELS:
        assert f"{name}.json" in doc, name
