"""The substation RTU over OPC-UA: every node of both RTU profiles read with a real asyncua
client, without security and with Basic256Sha256 / Aes128_Sha256_RsaOaep SignAndEncrypt,
with the bus's username and password."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyAes128Sha256RsaOaep, SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from aquavolt.faults import FaultSpec
from aquavolt.profiles import OpcuaProfile
from aquavolt.simulators.opcua import OpcuaBusServer
from aquavolt.simulators.sim import Simulation


async def read_all(client: Client, sim: Simulation, bus) -> int:
    idx = await client.get_namespace_index(bus.namespace_uri)
    n = 0
    for d in sim.loaded.field.gateway("gw-substation").devices:
        if d.bus != bus.id:
            continue
        prof = sim.loaded.profile_of(d.id)
        assert isinstance(prof, OpcuaProfile)
        want = sim.values(d.id)
        for p in prof.points:
            got = await client.get_node(ua.NodeId(f"{d.node_prefix}.{p.node}", idx)).read_value()
            w = want[p.name]
            if p.type == "bool":
                assert got is w, (d.id, p.name)
            elif p.type == "int32":
                assert isinstance(got, int) and got == round(w), (d.id, p.name)
            else:
                assert isinstance(got, float) and got == pytest.approx(w, rel=1e-12), (d.id, p.name)
            n += 1
    return n


def test_opcua_plain_and_secure(demo, h, tmp_path):
    clock = h.frozen_clock()
    sim = Simulation(demo, 1, clock.now(), clock)
    bus = demo.field.gateway("gw-substation").bus("rtu")
    expected = sum(len(demo.profile_of(d.id).points)
                   for d in demo.field.gateway("gw-substation").devices if d.bus == "rtu")

    async def main():
        server = OpcuaBusServer(sim, bus, "gw-substation", tmp_path / "state")
        await server.start()
        await server.update()
        cert, key = tmp_path / "client.der", tmp_path / "client.pem"
        await setup_self_signed_certificate(key, cert, "urn:aquavolt:test:client", "127.0.0.1",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "test"})
        counts = []
        for policy in (None, SecurityPolicyBasic256Sha256, SecurityPolicyAes128Sha256RsaOaep):
            client = Client(bus.endpoint, timeout=5)
            client.application_uri = "urn:aquavolt:test:client"
            client.set_user(bus.username)
            client.set_password(bus.password)
            if policy is not None:
                await client.set_security(policy, str(cert), str(key),
                                          mode=ua.MessageSecurityMode.SignAndEncrypt)
            async with client:
                counts.append(await read_all(client, sim, bus))
        # a wrong password is refused
        bad = Client(bus.endpoint, timeout=5)
        bad.set_user(bus.username)
        bad.set_password("wrong")
        with pytest.raises(ua.UaError):
            async with bad:
                pass
        # comm_loss: values go bad
        sim.add_fault(FaultSpec(kind="comm_loss", target="ss1-feeder-1"))
        await server.update()
        with pytest.raises(ua.UaError):  # anonymous: refused when the bus names a user
            async with Client(bus.endpoint, timeout=5):
                pass
        client = Client(bus.endpoint, timeout=5)
        client.set_user(bus.username)
        client.set_password(bus.password)
        async with client:
            idx = await client.get_namespace_index(bus.namespace_uri)
            dv = await client.get_node(ua.NodeId("SS1.F1.VoltageL1", idx)).read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode.value == ua.StatusCodes.BadNoCommunication
        await server.stop()
        assert (tmp_path / "state" / "opcua" / "rtu" / "server-cert.der").exists()
        return counts

    assert asyncio.run(main()) == [expected] * 3
