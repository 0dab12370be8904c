"""The OpenAPI 3.1 description of the operator API, generated (served at ``/openapi.json``).

The paths, methods and path parameters come from the aiohttp app's route table; the bodies
and answers from pydantic models (their JSON schemas, whose ``$defs`` are hoisted into
``components/schemas``). What only a person can say (a summary, the query parameters, which
models a route reads and answers) is in :data:`OPERATIONS`, keyed by method and path as the
route table spells them. A route missing from it is still listed, marked
``x-undescribed``, and :func:`undescribed` names it: ``tests/rules/test_openapi.py`` fails
until it is described.

The operator's web console (``rules/console``, every path under :data:`CONSOLE`) is not part
of this description: its pages, static files and event stream are for a browser, signed in
with a session cookie and CSRF token, not a Bearer token; its ``/console/api/`` actions are the
handlers of the routes described here. :func:`routes` leaves those paths out.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import MISSING, dataclass, field
from typing import Any, get_type_hints

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from aquavolt.rules.alarms import Alarm
from aquavolt.wire import AlarmEvent

REF = "#/components/schemas/{model}"


# ---- bodies and answers -------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class AckRequest(_Body):
    seen_seq: int = Field(description="The `seq` of the listing you saw: only alarms raised at or before it")
    ids: list[str] | None = Field(None, description="Alarm ids; without it, every unacknowledged one you saw")
    comment: str = ""


class ShelveRequest(_Body):
    reason: str = Field(description="Why (required)")
    duration_s: float | None = Field(None, description="How long; or until_ms")
    until_ms: int | None = Field(None, description="Until when (event time); at most 7 days ahead")


class UnshelveRequest(_Body):
    comment: str = ""


class CommentRequest(_Body):
    text: str


class ServiceRequest(_Body):
    reason: str = ""


class CommandRequest(_Body):
    gateway: str = Field(description="Gateway id, as in the field file")
    device: str = Field(description="Device id on that gateway")
    point: str = Field(description="A point in the gateway's writable_points")
    value: bool | float = Field(description="true/false for a coil, a finite number inside the point's range")
    reason: str = ""


class CommandIssued(BaseModel):
    """The command as signed and published; the gateway's answer lands in the command log."""

    model_config = ConfigDict(extra="allow")
    id: str
    issued_ms: int
    issuer: str
    operator: str
    command: dict[str, Any]


class CommandLog(BaseModel):
    model_config = ConfigDict(extra="allow")
    commands: list[dict[str, Any]] | None = None
    command: dict[str, Any] | None = Field(None, description="With ?id=: that command")
    replies: list[dict[str, Any]] | None = Field(None, description="With ?id=: every reply heard")


class Error(BaseModel):
    error: str


class ActionResult(BaseModel):
    """Every operator action answers with the transitions it caused, plus its own fields."""

    model_config = ConfigDict(extra="allow")
    events: list[AlarmEvent]


class AckResult(ActionResult):
    acknowledged: list[str]
    skipped: list[str]


class ShelveResult(ActionResult):
    shelved_until_ms: int


def _alarm_view() -> type[BaseModel]:
    """An alarm as ``http._alarm_view`` shows it: the manager's record without ``recent``."""
    hints = get_type_hints(Alarm)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default if f.default is not MISSING else ...)
        for f in dataclasses.fields(Alarm) if f.name != "recent"}
    return create_model("AlarmView", __doc__="One alarm: its lifecycle state and counters", **fields)


AlarmView = _alarm_view()


class AlarmList(BaseModel):
    seq: int = Field(description="Send it back as `seen_seq` with an acknowledgement")
    watermark_ms: int = Field(description="Newest event time seen")
    horizon_ms: int = Field(description="Event time released to the rules")
    alarms: list[AlarmView]  # type: ignore[valid-type]


class AlarmDetail(BaseModel):
    alarm: AlarmView  # type: ignore[valid-type]
    events: list[AlarmEvent]


class EventList(BaseModel):
    events: list[AlarmEvent]


class ActionList(BaseModel):
    actions: list[dict[str, Any]] = Field(description="operator, action, target, body, result, ts_ms")


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    mqtt_connected: bool
    watermark_ms: int
    horizon_ms: int
    late_messages: int
    buffered_messages: int
    backlog_messages: int


class ConsumptionDay(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    litres: float | None = Field(description="Consumption that day; None when a rollup is missing")
    last_year_day: str = Field(description="The day lag_days (364) before, weekdays aligned")
    last_year_litres: float | None
    ratio: float | None = Field(description="litres / last_year_litres")
    comparable: bool = Field(description="Both days plausible and neither a holiday (the check's rule)")


class Consumption(BaseModel):
    """A customer's daily consumption against the same period last year, from the daily rollups."""

    customer: str
    meter: str
    since: str
    until: str
    lag_days: int
    unit: str
    days_comparable: int
    this_l_per_day: float | None = Field(description="Mean over the comparable days")
    last_year_l_per_day: float | None = Field(description="Mean over the same days last year")
    ratio: float | None = Field(description="this_l_per_day / last_year_l_per_day")
    days: list[ConsumptionDay]


class CustomerAlertItem(BaseModel):
    alarm_id: str
    condition: str = Field(description="over_consumption, continuous_flow")
    transition: str = Field(description="raised or cleared")
    ts_ms: int
    message: str
    value: float | int | bool | str | None = None


class CustomerSms(BaseModel):
    id: str = Field(description="Event id: one message per customer per event")
    kind: str
    language: str
    text: str
    status: str = Field(description="queued, sent, delivered, failed, suppressed")
    event_ms: int
    updated_ms: int


class CustomerAlerts(BaseModel):
    customer: str
    alerts: list[CustomerAlertItem]
    sms: list[CustomerSms]


class Supply(BaseModel):
    asset: str
    kind: str = Field(description="transformer or feeder")


class CustomerOutage(BaseModel):
    asset: str
    kind: str
    start_ms: int
    end_ms: int | None = Field(description="None while it lasts")
    duration_s: float | None
    message: str


class CustomerOutages(BaseModel):
    customer: str
    supplied_by: list[Supply]
    outages: list[CustomerOutage]


# ---- what only a person can say about each route ------------------------------------------------
@dataclass(frozen=True)
class Op:
    summary: str
    query: dict[str, str] = field(default_factory=dict)
    """name -> JSON type ("string", "integer", "boolean")"""
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    answers: dict[str, str] = field(default_factory=dict)
    """other status codes -> description"""
    public: bool = False
    """No token needed."""
    customer: bool = False
    """A customer's token (``customer`` scheme), not an operator's."""


_REFUSED = {"400": "malformed request",
            "409": "the action does not apply (state, unknown alarm, missing reason)"}
_ALARM = "/alarms/{asset}/{condition}"

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/openapi.json"): Op("This description", public=True),
    ("GET", "/health"): Op("Engine health and counters", answer=Health, public=True),
    ("GET", "/alarms"): Op("Current alarms (not normal, or all with all=true); `seq` is what you saw: "
                           "send it back with an acknowledgement",
                           {"state": "string", "priority": "string", "asset": "string",
                            "condition": "string", "all": "boolean"}, answer=AlarmList),
    ("GET", _ALARM): Op("One alarm and its latest 100 transitions", answer=AlarmDetail,
                        answers={"404": "no such alarm"}),
    ("GET", "/events"): Op("Past transitions, newest first",
                           {"alarm_id": "string", "asset": "string", "priority": "string",
                            "since_ms": "integer", "until_ms": "integer", "limit": "integer"},
                           answer=EventList),
    ("POST", "/ack"): Op("Acknowledge the alarms you saw: only those raised at or before `seen_seq`; "
                         "without `ids`, every unacknowledged one you saw",
                         body=AckRequest, answer=AckResult, answers=_REFUSED),
    ("POST", _ALARM + "/shelve"): Op("Shelve with a reason and an expiry (duration_s or until_ms, at "
                                     "most 7 days)", body=ShelveRequest, answer=ShelveResult,
                                     answers=_REFUSED),
    ("POST", _ALARM + "/unshelve"): Op("Unshelve now", body=UnshelveRequest, answer=ActionResult,
                                       answers=_REFUSED),
    ("POST", _ALARM + "/comment"): Op("Add a comment", body=CommentRequest, answer=ActionResult,
                                      answers=_REFUSED),
    ("POST", _ALARM + "/{which}"): Op("Remove from service (maintenance) or return to service",
                                      body=ServiceRequest, answer=ActionResult, answers=_REFUSED),
    ("GET", "/performance"): Op("EEMUA 191 figures over [since_ms, until_ms) (default: the last 24 h of "
                                "event time): alarms per 10 min, floods, chattering, stale, top bad "
                                "actors, priority mix", {"since_ms": "integer", "until_ms": "integer"}),
    ("GET", "/actions"): Op("Audit log of operator actions, newest first", {"limit": "integer"},
                            answer=ActionList),
    ("GET", "/commands"): Op("Command log, newest first: who issued what, and the gateway's reply; with "
                             "`id`, one command and every reply heard",
                             {"id": "string", "since_ms": "integer", "limit": "integer"}, answer=CommandLog,
                             answers={"404": "no such command"}),
    ("POST", "/commands"): Op("Issue a command (role operator or engineer): the engine names the operator "
                              "from the token, signs it (Ed25519) and publishes it, never retained; the "
                              "gateway checks and answers", body=CommandRequest, answer=CommandIssued,
                              answers={**_REFUSED, "503": "the engine has no command key"}),
}

_CUSTOMER_REFUSED = {"400": "malformed query (the reason is given)",
                     "403": "the path names another customer than the token's"}


def _customer_ops() -> dict[tuple[str, str], Op]:
    """Each customer route, for the token's customer and with the customer named (who must be
    the token's)."""
    ops = {
        "consumption": Op("The customer's daily consumption (litres, UTC days, both ends included, at most "
                          "400 days; default the 30 days before today) beside the same days 364 days "
                          "earlier, from the daily rollups: the over-consumption check's figures",
                          {"since": "string", "until": "string"}, answer=Consumption, customer=True,
                          answers={**_CUSTOMER_REFUSED, "404": "the customer has no water meter",
                                   "503": "no InfluxDB, or it does not answer"}),
        "alerts": Op("The customer's alerts (raised, cleared) and the SMS recorded for them, newest first",
                     {"limit": "integer"}, answer=CustomerAlerts, customer=True, answers=_CUSTOMER_REFUSED),
        "outages": Op("Outages of the transformer or feeder supplying the customer, newest first",
                      {"limit": "integer"}, answer=CustomerOutages, customer=True, answers=_CUSTOMER_REFUSED),
    }
    out = {}
    for name, op in ops.items():
        out[("GET", f"/customer/{name}")] = op
        out[("GET", f"/customer/{{customer}}/{name}")] = op
    return out


OPERATIONS.update(_customer_ops())

CONSOLE = "/console"
"""Paths at or under it belong to the web console (a browser UI, not the Bearer API): left out."""

_ALTERNATION = re.compile(r"^[A-Za-z0-9_.~-]+(\|[A-Za-z0-9_.~-]+)*$")


def routes(app: web.Application) -> list[tuple[str, str, dict[str, list[str] | None]]]:
    """(method, path, {path parameter: its allowed values or None}) for every route but HEAD."""
    out = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        path = info.get("formatter") or info.get("path") or route.resource.canonical
        if path == CONSOLE or path.startswith(CONSOLE + "/"):
            continue
        params: dict[str, list[str] | None] = {}
        pattern = info.get("pattern")
        if pattern is not None:
            params = {name: _alternatives(pattern.pattern, name) for name in re.findall(r"{(\w+)}", path)}
        out.append((route.method, path, params))
    return out


def _alternatives(pattern: str, name: str) -> list[str] | None:
    """The allowed values of ``{name:a|b}``, or None for a free segment."""
    start = pattern.find(f"(?P<{name}>")
    if start < 0:
        return None
    i, depth = start + len(f"(?P<{name}>"), 1
    j = i
    while j < len(pattern) and depth:
        depth += {"(": 1, ")": -1}.get(pattern[j], 0)
        j += 1
    body = pattern[i : j - 1]
    return body.split("|") if _ALTERNATION.match(body) else None


def undescribed(app: web.Application) -> list[str]:
    """Routes of the app that :data:`OPERATIONS` does not describe, as ``METHOD path``."""
    return [f"{m} {p}" for m, p, _ in routes(app) if (m, p) not in OPERATIONS]


def _schemas(models: list[type[BaseModel]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model name -> its $ref, components/schemas) with every ``$defs`` hoisted."""
    keys, top = TypeAdapter.json_schemas([(m.__name__, "serialization", TypeAdapter(m)) for m in models],
                                          ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    refs = {name: schema for (name, _), schema in keys.items()}
    return refs, schemas


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def build(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``."""
    table = routes(app)
    ops = [OPERATIONS[(m, p)] for m, p, _ in table if (m, p) in OPERATIONS]
    models = {Error} | {m for op in ops for m in (op.body, op.answer) if m is not None}
    refs, schemas = _schemas(sorted(models, key=lambda m: m.__name__))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, params in table:
        op = OPERATIONS.get((method, path))
        entry: dict[str, Any] = {"operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}"}
        parameters: list[dict[str, Any]] = []
        for name, values in params.items():
            schema: dict[str, Any] = {"type": "string"}
            if values:
                schema["enum"] = values
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if op is None:
            entry.update({"summary": "(not described)", "x-undescribed": True,
                          "responses": {"default": {"description": "not described"}}})
        else:
            entry["summary"] = op.summary
            parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": t}}
                           for n, t in op.query.items()]
            if op.body is not None:
                entry["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": refs[op.body.__name__]}}}
            answer = refs[op.answer.__name__] if op.answer is not None else {"type": "object"}
            ok = _json(answer, "done")
            responses = {"200": ok, **{code: _json(refs["Error"], d) for code, d in op.answers.items()}}
            if op.public:
                entry["security"] = []
            else:
                responses["401"] = _json(refs["Error"], "missing or unknown token")
            if op.customer:
                entry["security"] = [{"customer": []}]
            entry["responses"] = responses
        if parameters:
            entry["parameters"] = parameters
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "aquavolt alarm API", "version": "1",
                 "description": "ISA-18.2 alarm lifecycle. Authenticate with `Authorization: Bearer <token>` "
                                "(one token per operator); every action is recorded with its operator. "
                                "Under /customer, the customer API takes a customer's token instead and "
                                "answers with that customer's data only."},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An operator's token"},
            "customer": {"type": "http", "scheme": "bearer",
                         "description": "A customer's token (paths under /customer): their own data only"}},
                       "schemas": schemas},
        "security": [{"bearer": []}],
        "paths": paths,
    }
