"""The InfluxDB writer: splitting a refused batch down to the bad points (real InfluxDB),
the schema set-up (real InfluxDB), Retry-After and the v2 API.

InfluxDB 1.6 never sends Retry-After and has no /api/v2/write, and no InfluxDB 2.x or 3.x
can be installed here: those two tests use a small aiohttp server of the test's own,
standing in for a throttling InfluxDB 2 at the writer's HTTP seam."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from aquavolt.collector.writer import InfluxWriter, gzip_level_for, retry_after_s
from aquavolt.harness.servers import free_port
from aquavolt.influx import Influx
from aquavolt.settings import InfluxSettings

OLD_MS = 1_600_000_000_000


def test_refused_points_are_isolated_and_the_rest_written(influx_settings: InfluxSettings) -> None:
    Influx(influx_settings).write([f"m,k=a f=1i {OLD_MS}"])
    lines = [f"m,k=b f={i}.5 {1_764_412_800_000 + i}" for i in range(100)]
    lines[10] = f"m,k=c f=2.5 {OLD_MS + 1}"  # float into an integer field: conflict
    lines[77] = "m,k=d f=oops 1764412800077"  # does not parse
    lines[78] = f"m,k=e f=3.5 {OLD_MS + 2}"  # conflict again

    async def go() -> list[tuple[int, str]]:
        async with InfluxWriter(influx_settings) as w:
            return await w.write(lines)

    refused = asyncio.run(go())
    assert [i for i, _ in refused] == [10, 77, 78]
    assert "field type conflict" in refused[0][1]
    assert "unable to parse" in refused[1][1]
    rows = Influx(influx_settings).rows("SELECT f FROM m WHERE k = 'b'")
    assert len(rows) == 97


def test_schema_setup_creates_database_policies_and_rollups(influx_settings: InfluxSettings) -> None:
    settings = influx_settings.model_copy(update={"database": influx_settings.database + "_new"})

    async def go() -> bool:
        async with InfluxWriter(settings) as w:
            ok = await w.ensure_schema()
            assert await w.write(["telemetry,device=d,gateway=g,point=p value=1.0,quality=192i 1"]) == []
            return ok

    assert asyncio.run(go())
    ix = Influx(settings)
    rps = {v[0] for v in ix.query("SHOW RETENTION POLICIES")[0]["values"]}
    assert {"autogen", "rp_1m", "rp_1h", "rp_1d"} <= rps
    cqs = next(s for s in ix.query("SHOW CONTINUOUS QUERIES") if s["name"] == settings.database)
    assert sorted(v[0] for v in cqs["values"]) == ["cq_telemetry_1d", "cq_telemetry_1h", "cq_telemetry_1m"]
    ix.query(f'DROP DATABASE "{settings.database}"')


def test_gzip_off_by_default_only_for_an_influxdb_on_this_machine() -> None:
    assert gzip_level_for("http://127.0.0.1:8086", None) == 0
    assert gzip_level_for("http://localhost:8086", None) == 0
    assert gzip_level_for("http://[::1]:8086", None) == 0
    assert gzip_level_for("http://influx.utility.example:8086", None) == 1
    assert gzip_level_for("https://10.0.0.5:8086", None) == 1
    assert gzip_level_for("http://127.0.0.1:8086", 6) == 6  # an explicit level wins
    assert gzip_level_for("http://10.0.0.5:8086", 0) == 0


def test_retry_after_parsing() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s("100000") == 300.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    got = retry_after_s(http_date)
    assert got is not None and 0.5 < got <= 2.5


def test_v2_api_and_retry_after_honoured() -> None:
    seen: list[dict[str, Any]] = []

    async def write(request: web.Request) -> web.Response:
        seen.append({"t": time.monotonic(), "path": request.path, "query": dict(request.query),
                     "auth": request.headers.get("Authorization"),
                     "gzip": request.headers.get("Content-Encoding"),
                     "body": (await request.read()).decode()})  # aiohttp inflates the body
        if len(seen) == 1:
            return web.Response(status=429, text='{"code":"too many requests"}',
                                headers={"Retry-After": "1"})
        if len(seen) == 2:
            return web.Response(status=503, text="busy")
        return web.Response(status=204)

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/api/v2/write", write)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        settings = InfluxSettings.from_url(
            f"http://127.0.0.1:{port}/?api=v2&org=utility&bucket=raw&token=secret")
        retries: list[str] = []
        try:
            async with InfluxWriter(settings, on_retry=retries.append) as w:
                assert await w.write(["m f=1.0 1", "m f=2.0 2"]) == []
        finally:
            await runner.cleanup()
        assert len(retries) == 2 and "429" in retries[0]

    asyncio.run(go())
    assert len(seen) == 3
    assert seen[0]["path"] == "/api/v2/write"
    assert seen[0]["query"] == {"org": "utility", "bucket": "raw", "precision": "ms"}
    assert seen[0]["auth"] == "Token secret"
    assert seen[0]["body"] == "m f=1.0 1\nm f=2.0 2" and seen[0]["gzip"] == "gzip"
    assert seen[1]["t"] - seen[0]["t"] >= 0.9  # waited as asked
    assert seen[2]["t"] - seen[1]["t"] < 0.5  # then a short backoff
