"""The agent's cheap hot-path code gives exactly what the plain code gives: the compiled
request decoders against the kernel codec (every shipped profile, every byte order), and the
report-by-exception step against a straightforward restatement of its rules."""

from __future__ import annotations

import math
import random

from conftest import MODBUS_PROFILES

from aquavolt.codec import ByteOrder, DataType
from aquavolt.edge.planner import Plan, compile_request, decode_request
from aquavolt.edge.report import Deadband, filter_readings
from aquavolt.profiles import ModbusPoint, ModbusProfile
from aquavolt.wire import Quality


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def _check_profile(profile: ModbusProfile, rng: random.Random) -> int:
    plan = Plan.build(profile, profile.points, max_gap=8)
    checked = 0
    for req in plan.requests:
        fast = compile_request(profile, req)
        for _ in range(50):
            if req.table.is_bit:
                raw: list[int] | list[bool] = [rng.random() < 0.5 for _ in range(req.count)]
            else:
                raw = [rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(0x10000)))
                       for _ in range(req.count)]
            want, got = decode_request(profile, req, raw), fast(raw)
            assert list(got) == list(want), profile.id
            for name in want:
                assert _same(got[name], want[name]), f"{profile.id}.{name}: {got[name]!r} != {want[name]!r}"
            checked += 1
        if not req.table.is_bit:  # a register outside 16 bits: the codec's error, per point
            bad = [0x10000] * req.count
            assert fast(bad) == decode_request(profile, req, bad)
    return checked


def test_compiled_decoders_equal_the_codec_for_every_shipped_profile() -> None:
    rng = random.Random(7)
    assert sum(_check_profile(p, rng) for p in MODBUS_PROFILES.values()) > 0


def test_compiled_decoders_equal_the_codec_in_every_byte_order() -> None:
    rng = random.Random(11)
    types = [t for t in DataType if t is not DataType.STRING]
    for order in ByteOrder:
        points, addr = [], 0
        for i, t in enumerate(types):
            points.append(ModbusPoint(name=f"p{i}", address=addr, type=t, scale=0.1 if i % 2 else 1.0,
                                      offset=5.0 if i % 3 == 0 else 0.0))
            addr += points[-1].count + (i % 3)
        points.append(ModbusPoint(name="label", address=addr, type=DataType.STRING, length=4))
        profile = ModbusProfile(id="fast_check", vendor="test", byte_order=order, address_base=0, points=points)
        assert _check_profile(profile, rng) > 0


def _reference(state: dict[str, tuple[object, Quality, float]], readings: list[tuple[str, object, int, Quality]],
               bands: dict[str, Deadband], now: float, silence: float) -> list[tuple[str, object, int, Quality]]:
    out = []
    for point, polled_value, ts, polled_quality in readings:
        value, quality = polled_value, polled_quality
        if (isinstance(value, float) and not math.isfinite(value)) or (value is None and quality is Quality.GOOD):
            value, quality = None, Quality.BAD
        last = state.get(point)
        if last is None or last[1] is not quality:
            send = True
        elif quality is not Quality.GOOD:
            send = False
        else:
            old, band = last[0], bands.get(point, Deadband())
            if isinstance(old, bool) or isinstance(value, bool) or not isinstance(old, int | float) \
                    or not isinstance(value, int | float):
                moved = old != value
            else:
                delta = abs(float(value) - float(old))
                if band.abs is None and band.pct is None:
                    moved = delta > 0
                else:
                    moved = (band.abs is not None and delta >= band.abs) or (
                        band.pct is not None and delta >= abs(float(old)) * band.pct / 100 and delta > 0)
            send = moved or now - last[2] >= silence
        if send:
            state[point] = (value, quality, now)
            out.append((point, value, ts, quality))
    return out


def test_report_by_exception_matches_its_rules() -> None:
    rng = random.Random(3)
    bands = {"a": Deadband(), "b": Deadband(abs=0.5), "c": Deadband(pct=10.0), "d": Deadband(abs=2.0, pct=1.0)}
    names = [*bands, "flag", "text", "e"]
    values: list[object] = [0, 1, 1.0, 1.2, -3.5, 100.0, 100.4, True, False, "on", "off", None, 2**60, 2**60 + 1,
                            float("nan"), float("inf"), 2**40]
    state: dict = {}
    ref: dict = {}
    now = 0.0
    for step in range(2000):
        now += rng.choice((0.0, 0.5, 1.0, 30.0))
        readings = [(n, rng.choice(values), step, rng.choice((Quality.GOOD, Quality.GOOD, Quality.BAD,
                                                               Quality.UNCERTAIN)))
                    for n in rng.sample(names, rng.randrange(1, len(names)))]
        got = filter_readings(state, readings, bands, now, 60.0)
        want = _reference(ref, readings, bands, now, 60.0)
        assert len(got) == len(want), f"step {step}"
        for g, w in zip(got, want, strict=True):
            assert g[0] == w[0] and _same(g[1], w[1]) and g[2] == w[2] and g[3] is w[3], f"step {step}: {g} {w}"


def test_health_payload_is_what_the_model_writes(mosquitto, topic_prefix, tmp_path) -> None:
    import orjson
    from helpers import gateway, make_agent

    from aquavolt.wire import Health, decode, encode

    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": 1}],
                 [{"id": f"m{i}", "profile": "av_flow1", "bus": "plc", "unit_id": i} for i in (1, 2)])
    agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "state")
    try:
        rt = agent.devices["m1"]
        rt.polls, rt.errors, rt.latency_ms, rt.last_good_ms, rt.last_error = 5, 1, 12.5, 1_700_000_000_000, "x"
        agent.devices["m2"].comm_fail = True
        payload = agent.health_payload()
        model = decode(payload, Health)
        assert orjson.loads(payload) == orjson.loads(encode(model))
        assert model.devices["m1"].polls == 5 and model.devices["m1"].poll_latency_ms == 12.5
        assert model.devices["m2"].state.value == "comm_fail" and model.buffer.depth == 0
    finally:
        agent.store.close()
