"""The operator API's OpenAPI description: generated from the app's route table and the
pydantic models, valid for ``openapi-spec-validator``, served at ``/openapi.json`` by the real
aiohttp app, and complete (a route added without a description fails here)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from aquavolt.clock import ManualClock
from aquavolt.config import load_field
from aquavolt.rules import openapi
from aquavolt.rules.http import build_app
from aquavolt.rules.service import Engine
from aquavolt.settings import MqttSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(load_field(ROOT / "examples/demo-town.yaml"), MqttSettings(),
                  tmp_path_factory.mktemp("rules"), ManualClock(1_780_000_000))


@pytest.fixture
def app(engine: Engine) -> web.Application:
    """The real operator API app (an aiohttp app runs on one event loop: one per test)."""
    return build_app(engine, {"t" * 16: "amina"})


def _serve(app: web.Application, requests: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
    """Serve ``app`` on 127.0.0.1 and answer each (method, path) without a token."""

    async def run() -> list[tuple[int, bytes]]:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]

        def call(method: str, path: str) -> tuple[int, bytes]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"{}" if method == "POST" else None)
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        try:
            return [await asyncio.to_thread(call, m, p) for m, p in requests]
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def test_served_description_is_valid_openapi(app: web.Application) -> None:
    [(status, body)] = _serve(app, [("GET", "/openapi.json")])
    assert status == 200
    spec = orjson.loads(body)
    validate(spec)  # raises on an invalid document (e.g. a $ref to '#/$defs/...')
    assert "$defs" not in orjson.dumps(spec).decode()
    schemas = spec["components"]["schemas"]
    assert {"AlarmEvent", "AlarmState", "AlarmView", "AckRequest"} <= set(schemas)
    ack = spec["paths"]["/ack"]["post"]
    assert ack["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AckRequest"}
    which = spec["paths"]["/alarms/{asset}/{condition}/{which}"]["post"]["parameters"][2]
    assert which["schema"]["enum"] == ["out-of-service", "in-service"]


def test_every_route_is_described_and_every_description_is_a_route(app: web.Application) -> None:
    assert openapi.undescribed(app) == [], "describe these routes in rules/openapi.py OPERATIONS"
    routes = {(m, p) for m, p, _ in openapi.routes(app)}
    assert set(openapi.OPERATIONS) - routes == set(), "described routes the app does not have"
    spec = openapi.build(app)
    assert {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} == routes


def test_public_routes_are_those_the_server_answers_without_a_token(app: web.Application) -> None:
    spec = openapi.build(app)
    calls, public = [], []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            values = {p["name"]: p["schema"].get("enum", ["x"])[0]
                      for p in op.get("parameters", []) if p["in"] == "path"}
            calls.append((method.upper(), path.format(**values)))
            public.append(op.get("security") == [])
    answers = _serve(app, calls)
    for (method, path), is_public, (status, _) in zip(calls, public, answers, strict=True):
        assert (status != 401) == is_public, (method, path, status)


def _undescribed_app(app: web.Application) -> web.Application:
    async def nothing(request: web.Request) -> web.Response:
        return web.Response()

    extra = web.Application()
    for route in app.router.routes():
        if route.method != "HEAD":
            extra.router.add_route(route.method, route.resource.canonical if route.resource else "/",
                                   route.handler)
    extra.router.add_post("/commands/{device}", nothing)
    return extra


def test_a_new_route_without_description_is_named(app: web.Application) -> None:
    extra: Any = _undescribed_app(app)
    assert openapi.undescribed(extra) == ["POST /commands/{device}"]
    spec = openapi.build(extra)
    assert spec["paths"]["/commands/{device}"]["post"]["x-undescribed"] is True
    validate(spec)
