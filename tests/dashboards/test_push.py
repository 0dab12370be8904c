"""``aquavolt dashboards push`` against a stand-in for Grafana's HTTP API.

No Grafana server can run on the machines we build on (not in Debian, PyPI or npm), so
these tests serve the handful of Grafana endpoints the push uses (datasource by uid,
folders, ``POST /api/dashboards/db``) from a local aiohttp application on 127.0.0.1, with
Grafana's status codes and bearer/basic authentication. The seam is the HTTP API itself:
the real grafana-client talks to it over real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from aquavolt.cli import main
from aquavolt.dashboards.grafana import DATASOURCE_UID
from aquavolt.harness.servers import free_port

from .conftest import DEMO

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        header = request.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(b"admin:secret").decode()
        if header not in (f"Bearer {TOKEN}", basic):
            return web.json_response({"message": "Unauthorized"}, status=401)
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_get("/api/datasources/uid/{uid}", self.get_ds)
        app.router.add_post("/api/datasources", self.create_ds)
        app.router.add_put("/api/datasources/{id}", self.update_ds)
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        return app

    async def get_ds(self, request: web.Request) -> web.Response:
        ds = self.datasources.get(request.match_info["uid"])
        return web.json_response(ds) if ds else web.json_response({"message": "Data source not found"}, status=404)

    async def create_ds(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["id"] = len(self.datasources) + 1
        self.datasources[body["uid"]] = body
        return web.json_response({"id": body["id"], "message": "Datasource added"})

    async def update_ds(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.datasources[body["uid"]] = body
        return web.json_response({"message": "Datasource updated"})

    async def get_folder(self, request: web.Request) -> web.Response:
        f = self.folders.get(request.match_info["uid"])
        return web.json_response(f) if f else web.json_response({"message": "folder not found"}, status=404)

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.folders[body["uid"]] = body
        return web.json_response(body)

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dash = body["dashboard"]
        if body.get("folderUid") not in self.folders:
            return web.json_response({"message": "folder not found"}, status=400)
        if dash["uid"] in self.dashboards and not body.get("overwrite"):
            return web.json_response({"message": "version-mismatch"}, status=412)
        self.dashboards[dash["uid"]] = dash
        return web.json_response({"status": "success", "uid": dash["uid"]})


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app())
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, name="fake-grafana", daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_push_creates_then_updates(grafana, capsys) -> None:
    fake, url = grafana
    assert main(["dashboards", "push", str(DEMO), "--url", url, "--token", TOKEN]) == 0
    assert "datasource created" in capsys.readouterr().out
    assert fake.datasources[DATASOURCE_UID]["type"] == "influxdb"
    assert fake.datasources[DATASOURCE_UID]["jsonData"]["dbName"] == "aquavolt"
    assert sorted(fake.dashboards) == sorted(f"aquavolt-{n}" for n in
                                              ("overview", "water", "electricity", "alarms", "gateways",
                                               "customer"))
    assert fake.dashboards["aquavolt-water"]["panels"]
    # pushing again updates in place, with basic authentication this time
    assert main(["dashboards", "push", str(DEMO), "--url", url, "--user", "admin", "--password", "secret"]) == 0
    assert "datasource updated" in capsys.readouterr().out
    assert len(fake.datasources) == 1 and len(fake.folders) == 1 and len(fake.dashboards) == 6


def test_push_with_a_wrong_token_fails_cleanly(grafana, capsys) -> None:
    fake, url = grafana
    assert main(["dashboards", "push", str(DEMO), "--url", url, "--token", "wrong"]) == 1
    assert "Unauthorized" in capsys.readouterr().err
    assert not fake.dashboards


def test_push_to_nothing_listening_fails_cleanly(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["dashboards", "push", str(DEMO), "--url", url, "--token", TOKEN]) == 1
    assert url.split("//")[1].split(":", maxsplit=1)[0] in capsys.readouterr().err
