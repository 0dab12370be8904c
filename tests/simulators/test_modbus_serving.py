"""Every point of every Modbus profile of the demo field, read through a real pymodbus client
over TCP and over the serial pseudo-terminal, against the model's values."""

from __future__ import annotations

import asyncio
import time

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from aquavolt.codec import ByteOrder, DataType, decode_raw
from aquavolt.faults import FaultSpec
from aquavolt.field import ModbusRtuBus, ModbusTcpBus
from aquavolt.harness.servers import free_port
from aquavolt.profiles import ModbusProfile, RegisterType
from aquavolt.simulators.modbus import RtuLine, start_tcp, units_of
from aquavolt.simulators.sim import Simulation


async def read_point(h, client, prof: ModbusProfile, p, unit: int):
    addr = prof.protocol_address(p)
    if p.table is RegisterType.COIL:
        r = await client.read_coils(addr, count=1, device_id=unit)
        return r, r.bits[0]
    if p.table is RegisterType.DISCRETE_INPUT:
        r = await client.read_discrete_inputs(addr, count=1, device_id=unit)
        return r, r.bits[0]
    fn = client.read_holding_registers if p.table is RegisterType.HOLDING else client.read_input_registers
    r = await fn(addr, count=p.count, device_id=unit)
    return r, h.decode(prof, p, list(r.registers))


def representatives(sim: Simulation, kind: type) -> list[tuple[str, str, int, str]]:
    """One device per profile on buses of ``kind``: (gateway, bus, unit, device)."""
    seen: dict[str, tuple[str, str, int, str]] = {}
    for gw in sim.loaded.field.gateways:
        for d in gw.devices:
            bus = gw.bus(d.bus)
            if isinstance(bus, kind) and d.profile not in seen and d.unit_id is not None:
                seen[d.profile] = (gw.id, bus.id, d.unit_id, d.id)
    return list(seen.values())


def test_tcp_every_point_of_every_profile(demo, h):
    sim = Simulation(demo, 1, h.frozen_clock().now(), h.frozen_clock())
    reps = representatives(sim, ModbusTcpBus)
    assert {sim.loaded.field.devices[d][1].profile for *_, d in reps} == {
        "av_pump1", "av_level1", "av_flow1", "av_pressure1", "eastron_sdm630", "av_em1", "av_wm1"}

    async def main():
        servers, checked = {}, 0
        for gw_id, bus_id, unit, dev in reps:
            bus = sim.loaded.field.gateway(gw_id).bus(bus_id)
            if bus_id not in servers:
                servers[bus_id] = await start_tcp(sim, bus, units_of(sim, bus_id, gw_id))
            client = AsyncModbusTcpClient(bus.host, port=bus.port, timeout=2, retries=0)
            await client.connect()
            prof = sim.loaded.profile_of(dev)
            want = sim.values(dev)
            for p in prof.points:
                r, got = await read_point(h, client, prof, p, unit)
                assert not r.isError(), (dev, p.name)
                assert h.close(got, want[p.name], p), (dev, p.name, got, want[p.name])
                if p.type is DataType.FLOAT32 and abs(want[p.name]) > 1e-3:
                    assert isinstance(got, float)
                    wrong = {ByteOrder.ABCD: ByteOrder.CDAB}.get(prof.order_of(p), ByteOrder.ABCD)
                    assert decode_raw(list(r.registers), p.type, wrong) != got, (dev, p.name)
                if p.type in (DataType.UINT16, DataType.UINT32) and p.scale == 1:
                    assert isinstance(got, int)
                checked += 1
            client.close()
        for s in servers.values():
            await s.shutdown()
        return checked

    assert asyncio.run(main()) == sum(len(sim.loaded.profile_of(d).points) for *_, d in reps)


def test_rtu_over_pty_every_point(demo, h):
    sim = Simulation(demo, 1, h.frozen_clock().now(), h.frozen_clock())
    [(gw_id, bus_id, unit, dev)] = representatives(sim, ModbusRtuBus)
    bus = sim.loaded.field.gateway(gw_id).bus(bus_id)

    async def main():
        line = RtuLine(sim, bus, units_of(sim, bus_id, gw_id))
        await line.start()
        client = AsyncModbusSerialClient(bus.serial_port, baudrate=bus.baud_rate, parity=bus.parity,
                                         timeout=1, retries=0)
        assert await client.connect()
        prof = sim.loaded.profile_of(dev)
        want = sim.values(dev)
        for p in prof.points:
            _r, got = await read_point(h, client, prof, p, unit)
            assert h.close(got, want[p.name], p), (p.name, got, want[p.name])
        # a second unit on the same line, and a unit that is absent stays silent
        _r, vol = await read_point(h, client, prof, prof.by_name["volume_m3"], 7)
        assert h.close(vol, sim.values("wm-c0007")["volume_m3"], prof.by_name["volume_m3"])
        try:
            await client.read_holding_registers(0, count=2, device_id=200)
            silent = False
        except ModbusIOException:
            silent = True
        client.close()
        await line.stop()
        return silent

    assert asyncio.run(main())


def test_device_faults_on_the_wire(demo, h):
    """comm_loss: timeout (exception 11 behind a concentrator); modbus_exception: the code; slow_device: late; outage: last gasp
    then silence; writes reach the pump."""
    clock = h.frozen_clock()
    sim = Simulation(demo, 1, clock.now(), clock)
    gw = sim.loaded.field.gateway("gw-meters-a")
    bus = gw.bus("conc-a")
    gwp = sim.loaded.field.gateway("gw-pumping")
    plc = gwp.bus("plc")

    async def main():
        s1 = await start_tcp(sim, bus, units_of(sim, "conc-a", gw.id))
        s2 = await start_tcp(sim, plc, units_of(sim, "plc", gwp.id))
        c = AsyncModbusTcpClient(bus.host, port=bus.port, timeout=0.5, retries=0)
        await c.connect()
        assert not (await c.read_holding_registers(0, count=10, device_id=1)).isError()
        sim.add_fault(FaultSpec(kind="modbus_exception", target="em-c0001", code=4))
        r = await c.read_holding_registers(0, count=10, device_id=1)
        assert r.isError() and r.exception_code == 4
        sim.add_fault(FaultSpec(kind="slow_device", target="em-c0002", delay_s=0.3))
        t0 = time.monotonic()
        assert not (await c.read_holding_registers(0, count=10, device_id=2)).isError()
        assert time.monotonic() - t0 >= 0.3
        sim.add_fault(FaultSpec(kind="comm_loss", target="em-c0003"))
        # conc-a is a concentrator (many unit ids): it answers for the meter it cannot reach
        t0 = time.monotonic()
        r = await c.read_holding_registers(0, count=10, device_id=3)
        assert r.isError() and r.exception_code == 11 and time.monotonic() - t0 < 0.4
        # the same meter alone on its own TCP link: no answer at all, the client times out
        lone = bus.model_copy(update={"port": free_port()})
        s3 = await start_tcp(sim, lone, {3: "em-c0003"})
        c3 = AsyncModbusTcpClient(lone.host, port=lone.port, timeout=0.5, retries=0)
        await c3.connect()
        try:
            await c3.read_holding_registers(0, count=10, device_id=3)
            raise AssertionError("a device with comm_loss answered")
        except ModbusIOException:
            pass
        c3.close()
        await s3.shutdown()
        # transformer outage, with the clock moved by hand: last gasp within the window, then silence
        sim.add_fault(FaultSpec(kind="transformer_outage", target="tx-1a", last_gasp_window_s=600))
        clock.start += 120
        sim.sync()
        r = await c.read_discrete_inputs(0, count=2, device_id=4)
        assert r.bits[:2] == [True, False]
        r = await c.read_holding_registers(0, count=1, device_id=4)
        assert r.registers[0] == 0  # voltage
        clock.start += 600
        sim.sync()
        r = await c.read_discrete_inputs(0, count=2, device_id=4)
        assert r.isError() and r.exception_code == 11, "a meter without power answered"
        c.close()
        p = AsyncModbusTcpClient(plc.host, port=plc.port, timeout=1, retries=0)
        await p.connect()
        assert not (await p.write_register(19, 750, device_id=1)).isError()  # speed setpoint 75 %
        assert sim.model.pumps["pump-1"].speed_pct == 75.0
        r = await p.write_register(1, 5, device_id=1)  # motor current: read only
        assert r.isError() and r.exception_code == 2
        p.close()
        await s1.shutdown()
        await s2.shutdown()

    asyncio.run(main())
