"""The OpenAPI 3.1 description of the operator API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from aquavolt.wire import AlarmEvent

_ID = [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}},
       {"name": "condition", "in": "path", "required": True, "schema": {"type": "string"}}]


def _q(*names: str) -> list[dict[str, Any]]:
    ints = {"since_ms", "until_ms", "limit"}
    return [{"name": n, "in": "query", "required": False,
             "schema": {"type": "integer" if n in ints else "string"}} for n in names]


def _body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required}}}}


_OK = {"200": {"description": "done; the transitions it caused are in `events`"},
       "401": {"description": "missing or unknown token"},
       "409": {"description": "the action does not apply (state, unknown alarm, missing reason)"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "aquavolt alarm API", "version": "1",
             "description": "ISA-18.2 alarm lifecycle. Authenticate with `Authorization: Bearer <token>` "
                            "(one token per operator); every action is recorded with its operator."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": {"AlarmEvent": AlarmEvent.model_json_schema()}},
    "security": [{"bearer": []}],
    "paths": {
        "/alarms": {"get": {"summary": "Current alarms (not normal, or all with all=true); `seq` is what "
                                       "you saw: send it back with an acknowledgement",
                            "parameters": _q("state", "priority", "asset", "condition", "all"),
                            "responses": {"200": {
                                "description": "{seq, watermark_ms, horizon_ms, alarms}"}}}},
        "/alarms/{asset}/{condition}": {"get": {"summary": "One alarm and its history", "parameters": _ID,
                                                "responses": {"200": {"description": "{alarm, events}"},
                                                              "404": {"description": "no such alarm"}}}},
        "/events": {"get": {"summary": "Past transitions, newest first",
                            "parameters": _q("alarm_id", "asset", "priority", "since_ms", "until_ms",
                                             "limit"),
                            "responses": {"200": {"description": "{events: [AlarmEvent]}"}}}},
        "/ack": {"post": {"summary": "Acknowledge the alarms you saw: only those raised at or before "
                                     "`seen_seq`; without `ids`, every unacknowledged one you saw",
                          "requestBody": _body({"ids": {"type": "array", "items": {"type": "string"}},
                                                "seen_seq": {"type": "integer"},
                                                "comment": {"type": "string"}},
                                               ["seen_seq"]),
                          "responses": {**_OK, "200": {"description": "{acknowledged, skipped, events}"}}}},
        "/alarms/{asset}/{condition}/shelve": {"post": {
            "summary": "Shelve with a reason and an expiry (duration_s or until_ms, at most 7 days)",
            "parameters": _ID, "responses": _OK,
            "requestBody": _body({"reason": {"type": "string"}, "duration_s": {"type": "number"},
                                  "until_ms": {"type": "integer"}}, ["reason"])}},
        "/alarms/{asset}/{condition}/unshelve": {"post": {
            "summary": "Unshelve now", "parameters": _ID, "responses": _OK,
            "requestBody": _body({"comment": {"type": "string"}}, [])}},
        "/alarms/{asset}/{condition}/comment": {"post": {
            "summary": "Add a comment", "parameters": _ID, "responses": _OK,
            "requestBody": _body({"text": {"type": "string"}}, ["text"])}},
        "/alarms/{asset}/{condition}/out-of-service": {"post": {
            "summary": "Remove from service (maintenance)", "parameters": _ID, "responses": _OK,
            "requestBody": _body({"reason": {"type": "string"}}, ["reason"])}},
        "/alarms/{asset}/{condition}/in-service": {"post": {
            "summary": "Return to service", "parameters": _ID, "responses": _OK,
            "requestBody": _body({"reason": {"type": "string"}}, [])}},
        "/performance": {"get": {"summary": "EEMUA 191 figures over [since_ms, until_ms) (default: the last "
                                            "24 h of event time): alarms per 10 min, floods, chattering, "
                                            "stale, top bad actors, priority mix",
                                 "parameters": _q("since_ms", "until_ms"),
                                 "responses": {"200": {"description": "figures and their targets"}}}},
        "/actions": {"get": {"summary": "Audit log of operator actions", "parameters": _q("limit"),
                             "responses": {"200": {"description": "{actions}"}}}},
        "/health": {"get": {"summary": "Engine health (no token)", "security": [],
                            "responses": {"200": {"description": "counters: mqtt_connected, "
                                                                 "watermark_ms (newest event time seen), "
                                                                 "horizon_ms (event time released to the "
                                                                 "rules), late_messages, buffered_messages, "
                                                                 "backlog_messages, ..."}}}},
        "/openapi.json": {"get": {"summary": "This description", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
}
