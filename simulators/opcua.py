"""OPC-UA servers of a simulated field (asyncua), one per ``opcua`` bus.

Endpoint and namespace URI come from the bus. Each point of each device on the bus is a
variable with a string NodeId ``ns=<idx>;s=<node_prefix>.<node>`` (``SS1.F1.VoltageL1``),
under one object per device. Security: None, Basic256Sha256 (Sign, SignAndEncrypt) and
Aes128_Sha256_RsaOaep (Sign, SignAndEncrypt); the server's certificate and key are made on
first start under ``<state dir>/opcua/<bus>/`` and reused after. Any client certificate is
accepted. When the bus names a username, only username/password logins with the bus's
credentials are accepted; otherwise anonymous logins are.

Values carry the simulated time as source timestamp. A device with ``comm_loss`` keeps its
last values with status BadNoCommunication.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from aquavolt.field import OpcuaBus
from aquavolt.profiles import OpcuaProfile
from aquavolt.simulators.sim import Simulation

log = logging.getLogger("aquavolt.sim.opcua")

POLICIES = [
    ua.SecurityPolicyType.NoSecurity,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
]
_VTYPE = {"double": ua.VariantType.Double, "float": ua.VariantType.Float,
          "int32": ua.VariantType.Int32, "uint32": ua.VariantType.UInt32,
          "int64": ua.VariantType.Int64, "bool": ua.VariantType.Boolean,
          "string": ua.VariantType.String}


def _cast(kind: str, v: Any) -> Any:
    if kind in ("double", "float"):
        return float(v)
    if kind == "bool":
        return bool(v)
    if kind == "string":
        return str(v)
    return round(float(v))


class BusUsers(UserManager):
    """The bus's one username/password (or anyone, when the bus names none)."""

    def __init__(self, bus: OpcuaBus) -> None:
        self.bus = bus

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if self.bus.username is None:
            return User(role=UserRole.User)
        if username == self.bus.username and password == (self.bus.password or ""):
            return User(role=UserRole.User)
        return None


class OpcuaBusServer:
    def __init__(self, sim: Simulation, bus: OpcuaBus, gateway_id: str, state_dir: Path) -> None:
        self.sim = sim
        self.bus = bus
        self.devices = [d for d in sim.loaded.field.gateway(gateway_id).devices if d.bus == bus.id]
        self.dir = state_dir / "opcua" / bus.id
        self.server = Server(user_manager=BusUsers(bus))
        self.nodes: list[tuple[str, str, str, ua.NodeId]] = []  # device, point, type, node id
        self.app_uri = f"urn:aquavolt:sim:{bus.id}"

    async def start(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.bus.endpoint)
        s.set_server_name(f"aquavolt simulator {self.bus.id}")
        await s.set_application_uri(self.app_uri)
        s.set_security_policy(POLICIES)
        if self.bus.username is not None:
            s.set_identity_tokens([ua.UserNameIdentityToken])
        self.dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.dir / "server-cert.der", self.dir / "server-key.pem"
        await setup_self_signed_certificate(
            key, cert, self.app_uri, "127.0.0.1",
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": f"aquavolt simulator {self.bus.id}", "organizationName": "aquavolt"},
        )
        await s.load_certificate(str(cert))
        await s.load_private_key(str(key))
        idx = await s.register_namespace(self.bus.namespace_uri)
        objects = s.nodes.objects
        for d in self.devices:
            prof = self.sim.loaded.profile_of(d.id)
            assert isinstance(prof, OpcuaProfile)
            prefix = d.node_prefix or d.id
            obj = await objects.add_object(ua.NodeId(prefix, idx), ua.QualifiedName(prefix, idx))
            values = self.sim.values(d.id)
            for p in prof.points:
                nid = ua.NodeId(f"{prefix}.{p.node}", idx)
                await obj.add_variable(nid, ua.QualifiedName(p.node, idx),
                                       ua.Variant(_cast(p.type, values[p.name]), _VTYPE[p.type]))
                self.nodes.append((d.id, p.name, p.type, nid))
        await s.start()
        log.info("OPC-UA %s on %s (namespace %s)", self.bus.id, self.bus.endpoint, self.bus.namespace_uri)

    async def update(self) -> None:
        """Write every variable from the model's current tick (yields between devices)."""
        t = self.sim.model.t if self.sim.model.snap is None else self.sim.model.snap.t
        ts = datetime.fromtimestamp(t, UTC)
        for dev in self.devices:
            silent = self.sim.devices.answer(dev.id, self.sim.now()).mode == "silent"
            values = self.sim.values(dev.id)
            for d_id, point, kind, nid in self.nodes:
                if d_id != dev.id:
                    continue
                status = ua.StatusCode(ua.StatusCodes.BadNoCommunication if silent else ua.StatusCodes.Good)
                dv = ua.DataValue(ua.Variant(_cast(kind, values[point]), _VTYPE[kind]), status,
                                  SourceTimestamp=ts, ServerTimestamp=datetime.now(UTC))
                await self.server.write_attribute_value(nid, dv)
            await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.server.stop()
