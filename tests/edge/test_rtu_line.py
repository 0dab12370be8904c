"""The RS-485 line's timing: the inter-frame silence of Modbus RTU, seen from the line."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MODBUS_PROFILES, ModbusRtuPeer, Unit

from aquavolt.edge.drivers.modbus_rtu import ModbusRtuDriver, inter_frame_delay_s
from aquavolt.field import Device, ModbusRtuBus

LEVEL = MODBUS_PROFILES["av_level1"]


def _gaps(log: list[tuple[bool, float]]) -> list[float]:
    """Time from each answer's last chunk to the next request's first, as the line saw them."""
    gaps, last_answer, answering = [], None, False
    for from_server, t in log:
        if from_server:
            last_answer, answering = t, True
        elif answering and last_answer is not None:
            gaps.append(t - last_answer)
            answering = False
    return gaps


def test_the_delay_is_three_and_a_half_characters_and_1750_us_above_19200_baud() -> None:
    bus = ModbusRtuBus(id="l", serial_port="/dev/null", baud_rate=19200, parity="E")
    assert inter_frame_delay_s(bus) == pytest.approx(3.5 * 11 / 19200)
    assert inter_frame_delay_s(bus.model_copy(update={"baud_rate": 9600, "parity": "N"})) == \
        pytest.approx(3.5 * 10 / 9600)
    assert inter_frame_delay_s(bus.model_copy(update={"baud_rate": 38400})) == 0.00175
    assert inter_frame_delay_s(bus.model_copy(update={"inter_frame_delay_s": 0.01})) == 0.01


@pytest.mark.parametrize(("baud", "parity"), [(19200, "N"), (115200, "N")])
def test_every_request_waits_the_inter_frame_silence_after_the_last_answer(peers, baud: int,
                                                                            parity: str) -> None:
    """Back-to-back reads of two units on one line: each request reaches the line at least the
    inter-frame delay after the previous answer left it (the times are taken on the line's side
    of both, so a loaded machine only lengthens the gaps)."""
    peer = ModbusRtuPeer({1: Unit().fill(LEVEL), 2: Unit().fill(LEVEL)}, baud=baud, parity=parity)
    peers.append(peer)
    bus = ModbusRtuBus(id="rs485", serial_port=peer.bridge.client_path, baud_rate=baud, parity=parity)
    drv = ModbusRtuDriver(bus, MODBUS_PROFILES)
    units = [Device(id=f"lvl-{u}", profile=LEVEL.id, bus="rs485", unit_id=u) for u in (1, 2)]

    async def reads() -> int:
        await drv.start()
        answered = 0
        try:
            for i in range(12):
                got = await drv.read(units[i % 2], "all", list(LEVEL.points))
                answered += all(not isinstance(v, Exception) for v in got.values())
        finally:
            await drv.close()
        return answered

    assert asyncio.run(reads()) == 12
    gaps = _gaps(peer.bridge.log)
    assert len(gaps) >= 11, gaps
    assert min(gaps) >= drv.delay_s, (min(gaps), drv.delay_s)
