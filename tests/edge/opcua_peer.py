"""A real asyncua server serving OPC-UA devices from their profiles (test peer)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from conftest import LoopThread, sample_raw
from cryptography.x509.oid import ExtendedKeyUsageOID

from aquavolt.profiles import OpcuaProfile

_VT = {"double": ua.VariantType.Double, "float": ua.VariantType.Float, "int32": ua.VariantType.Int32,
       "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64, "bool": ua.VariantType.Boolean,
       "string": ua.VariantType.String}

ALL_POLICIES = [
    ua.SecurityPolicyType.NoSecurity,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
]


class Users:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None or self.users.get(username) != password:
            return None
        return User(role=UserRole.User)


class OpcuaPeer:
    def __init__(self, devices: list[tuple[str, OpcuaProfile]], port: int, workdir: Path,
                 uri: str = "urn:aquavolt:sim", users: dict[str, str] | None = None, salt: int = 0) -> None:
        self.devices = devices
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/aquavolt/rtu"
        self.workdir = workdir
        self.uri = uri
        self.users = users
        self.salt = salt
        self.vars: dict[str, Any] = {}
        self.server: Server | None = None
        self.lt = LoopThread(f"opcua-{port}")
        self.start()

    def start(self) -> None:
        self.lt.run(self._start())

    async def _start(self) -> None:
        server = Server(user_manager=Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("aquavolt test RTU")
        app_uri = "urn:aquavolt:test:rtu"
        await server.set_application_uri(app_uri)
        server.set_security_policy(ALL_POLICIES)
        key, cert = self.workdir / "server-key.pem", self.workdir / "server-cert.der"
        await setup_self_signed_certificate(key, cert, app_uri, socket.gethostname(),
                                            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                            {"organizationName": "aquavolt tests"})
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        idx = await server.register_namespace(self.uri)
        objects = server.nodes.objects
        for prefix, profile in self.devices:
            for p in profile.points:
                name = f"{prefix}.{p.node}"
                var = await objects.add_variable(ua.NodeId(name, idx), name,
                                                 ua.Variant(sample_raw(p, self.salt), _VT[p.type]))
                if p.writable:
                    await var.set_writable()
                self.vars[name] = var
        await server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.lt.run(self._stop(self.server))
            self.server = None

    @staticmethod
    async def _stop(server: Server) -> None:
        # refuse new connections first: a client reconnecting while the server closes the
        # connections it has would otherwise be accepted and keep server.stop() waiting
        listener = getattr(server.bserver, "_server", None)
        if listener is not None:
            listener.close()
        await server.stop()

    def restart(self) -> None:
        self.stop()
        self.vars.clear()
        self.start()

    def set(self, name: str, value: Any, point_type: str = "double") -> None:
        self.lt.run(self.vars[name].write_value(ua.Variant(value, _VT[point_type])))

    def get(self, name: str) -> Any:
        return self.lt.run(self.vars[name].read_value())

    def close(self) -> None:
        self.stop()
        self.lt.close()
