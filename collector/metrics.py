"""The collector's own figures: counters kept by the pipeline, rendered for Prometheus on
``/metrics`` (aiohttp, 127.0.0.1) and written every few seconds to InfluxDB as
``collector_stats``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from aquavolt import schema

log = logging.getLogger("aquavolt.collector.metrics")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Stats:
    messages: int = 0
    readings: int = 0
    points_written: int = 0
    batches: int = 0
    retries: int = 0
    deadletters: dict[str, int] = field(default_factory=dict)
    acks: int = 0
    resend_requests: int = 0  # gaps asked again of a gateway
    lost_messages: int = 0  # data messages a gateway no longer had: lost for good
    lost_gaps: int = 0
    sparkplug_gaps: int = 0  # sequence gaps of Sparkplug edge nodes
    sparkplug_rebirths: int = 0  # rebirth requests (NCMD) sent to them
    notify_dropped: int = 0  # systemd notify messages its full socket could not take
    latency_sum_s: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_max_s: float = 0.0  # since the last stats line
    # gauges, refreshed by the pipeline
    inbox: int = 0
    unacked: int = 0
    pending_points: int = 0
    started: float = field(default_factory=time.monotonic)
    last_write: float = field(default_factory=time.monotonic)
    """When a batch was last written (monotonic)."""
    busy_since: float | None = None
    """Since when work has been waiting (monotonic), None while idle."""
    _last: tuple[float, int, int, int, float] = (0.0, 0, 0, 0, 0.0)

    def batch_done(self, points: int, latency_s: float) -> None:
        self.last_write = time.monotonic()
        self.batches += 1
        self.points_written += points
        self.latency_sum_s += latency_s
        self.latency_max_s = max(self.latency_max_s, latency_s)
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if latency_s <= bound:
                self.latency_buckets[i] += 1

    def backlog(self) -> int:
        return self.inbox + self.unacked + self.pending_points

    def mark_busy(self) -> None:
        """Called with the gauges: starts (or ends) the clock of waiting work."""
        if self.backlog() == 0:
            self.busy_since = None
        elif self.busy_since is None:
            self.busy_since = time.monotonic()

    def stuck_for(self) -> float:
        """Wall seconds work has waited with nothing written (0 when idle or writing)."""
        if self.busy_since is None:
            return 0.0
        return max(0.0, time.monotonic() - max(self.busy_since, self.last_write))

    @property
    def deadletters_total(self) -> int:
        return sum(self.deadletters.values())

    def prometheus(self) -> str:
        p = "aquavolt_collector_"
        out = [
            f"# TYPE {p}messages_total counter", f"{p}messages_total {self.messages}",
            f"# TYPE {p}readings_total counter", f"{p}readings_total {self.readings}",
            f"# TYPE {p}points_written_total counter", f"{p}points_written_total {self.points_written}",
            f"# TYPE {p}batches_total counter", f"{p}batches_total {self.batches}",
            f"# TYPE {p}resend_requests_total counter", f"{p}resend_requests_total {self.resend_requests}",
            f"# TYPE {p}lost_messages_total counter", f"{p}lost_messages_total {self.lost_messages}",
            f"# TYPE {p}lost_gaps_total counter", f"{p}lost_gaps_total {self.lost_gaps}",
            f"# TYPE {p}sparkplug_seq_gaps_total counter",
            f"{p}sparkplug_seq_gaps_total {self.sparkplug_gaps}",
            f"# TYPE {p}sparkplug_rebirth_requests_total counter",
            f"{p}sparkplug_rebirth_requests_total {self.sparkplug_rebirths}",
            f"# TYPE {p}write_retries_total counter", f"{p}write_retries_total {self.retries}",
            f"# TYPE {p}acks_total counter", f"{p}acks_total {self.acks}",
            f"# TYPE {p}notify_dropped_total counter", f"{p}notify_dropped_total {self.notify_dropped}",
            f"# TYPE {p}deadletters_total counter",
        ]
        for kind in ("malformed", "future", "rejected", "sparkplug"):
            out.append(f'{p}deadletters_total{{reason="{kind}"}} {self.deadletters.get(kind, 0)}')
        out += [
            f"# TYPE {p}backlog_messages gauge", f"{p}backlog_messages {self.inbox + self.unacked}",
            f"# TYPE {p}unacked_messages gauge", f"{p}unacked_messages {self.unacked}",
            f"# TYPE {p}pending_points gauge", f"{p}pending_points {self.pending_points}",
            f"# TYPE {p}batch_latency_seconds histogram",
        ]
        for bound, n in zip(LATENCY_BUCKETS_S, self.latency_buckets, strict=True):
            out.append(f'{p}batch_latency_seconds_bucket{{le="{bound}"}} {n}')
        out += [
            f'{p}batch_latency_seconds_bucket{{le="+Inf"}} {self.batches}',
            f"{p}batch_latency_seconds_sum {self.latency_sum_s:.6f}",
            f"{p}batch_latency_seconds_count {self.batches}",
            f"# TYPE {p}uptime_seconds gauge",
            f"{p}uptime_seconds {time.monotonic() - self.started:.3f}",
        ]
        return "\n".join(out) + "\n"

    def influx_line(self, collector: str, now_ms: int | None = None) -> str:
        """One ``collector_stats`` point; rates are over the time since the previous one."""
        now = time.monotonic()
        t0, msgs0, pts0, batches0, lat0 = self._last
        span = now - t0 if t0 else now - self.started
        nb = self.batches - batches0
        fields: dict[str, float | int | bool | str] = {
            "messages_total": self.messages, "readings_total": self.readings,
            "points_written_total": self.points_written, "batches_total": self.batches,
            "write_retries_total": self.retries, "deadletters_total": self.deadletters_total,
            "backlog_messages": self.inbox + self.unacked, "pending_points": self.pending_points,
            "messages_per_s": (self.messages - msgs0) / span if span > 0 else 0.0,
            "points_per_s": (self.points_written - pts0) / span if span > 0 else 0.0,
            "batch_latency_ms_mean": (self.latency_sum_s - lat0) / nb * 1000 if nb else 0.0,
            "batch_latency_ms_max": self.latency_max_s * 1000,
        }
        self._last = (now, self.messages, self.points_written, self.batches, self.latency_sum_s)
        self.latency_max_s = 0.0
        ts = now_ms if now_ms is not None else int(time.time() * 1000)
        return schema.line(schema.COLLECTOR_STATS, {"collector": collector}, fields, ts)


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1 (Prometheus text format 0.0.4) and ``GET /health``:
    200 while the collector makes progress, 503 with the reason when it does not (not
    connected to the broker, or messages waiting with nothing written for a while). A loop
    that is stuck does not answer at all: a health check's timeout says so."""

    def __init__(self, render: Callable[[], str], port: int, host: str = "127.0.0.1",
                 health: Callable[[], tuple[bool, dict[str, object]]] | None = None) -> None:
        self.render = render
        self.port = port
        self.host = host
        self.health = health
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _req: web.Request) -> web.Response:
        return web.Response(text=self.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _health(self, _req: web.Request) -> web.Response:
        ok, body = self.health() if self.health is not None else (True, {})
        return web.json_response({"ok": ok, **body}, status=200 if ok else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            log.error("metrics endpoint not available on %s:%s: %s", self.host, self.port, exc)
            await self.stop()
            return
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
