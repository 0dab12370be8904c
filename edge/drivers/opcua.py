"""OPC-UA: one client per endpoint under a reconnect supervisor.

The supervisor has an explicit state (:class:`LinkState`), reconnects with a capped,
jittered exponential backoff, and after every (re)connection resolves the namespace index
again and rebuilds its subscription: a server restart never ends collection. Values arrive
by subscription (with an absolute deadband filter where the profile gives ``deadband_abs``
and the server accepts it, plain otherwise) into a cache the polls read; with
``subscribe: false``, or for nodes not yet notified, polls read the server directly.

Security: None, Sign or SignAndEncrypt with Basic256Sha256 or Aes128_Sha256_RsaOaep. The
client certificate comes from the bus config, or is generated on first start under the
state folder (``opcua/<gateway>-cert.der`` and ``-key.pem``). The server's certificate must
be one the bus trusts (:mod:`edge.drivers.opcua_trust`), checked before the session is
activated (before any password is sent); a password is never sent without security.

Recovery: the reconnect backoff is capped at ``reconnect_max_s`` (a few seconds, not the
devices' breaker cap), so a server that comes back after any outage is connected again within
that; ``on_connected`` hooks tell the agent, which closes the breakers of the bus's devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aquavolt.backoff import Backoff
from aquavolt.codec import Value
from aquavolt.edge.drivers.base import PointResult
from aquavolt.edge.drivers.opcua_trust import TrustList, UntrustedServer, refusal
from aquavolt.errors import DeviceError, DeviceTimeout
from aquavolt.field import Device, OpcuaBus, SecurityMode, SecurityPolicy
from aquavolt.logs import OnceLogger
from aquavolt.profiles import OpcuaPoint, OpcuaProfile, PointBase

log = logging.getLogger("aquavolt.edge.opcua")

_POLICY: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
}
_MODE = {SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
         SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt}
_VARIANT = {"double": ua.VariantType.Double, "float": ua.VariantType.Float, "int32": ua.VariantType.Int32,
            "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64, "bool": ua.VariantType.Boolean,
            "string": ua.VariantType.String}
_NETWORK_ERRORS = (OSError, TimeoutError, ConnectionError, ua.UaError)


class LinkState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    REFUSED = "refused"  # configuration the driver will not run (a password without security)
    CLOSED = "closed"


def node_id(ns: int, device: Device, point: OpcuaPoint) -> str:
    return f"ns={ns};s={device.node_prefix}.{point.node}"


class _Handler:
    def __init__(self, driver: OpcuaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        status = data.monitored_item.Value.StatusCode
        good = status is None or status.is_good()
        self.driver.cache[node.nodeid.to_string()] = (val, good)

    def status_change_notification(self, status: Any) -> None:
        self.driver.lost.set()


class OpcuaDriver:
    def __init__(self, bus: OpcuaBus, profiles: dict[str, OpcuaProfile], devices: list[Device],
                 gateway_id: str, state_dir: Path, reconnect_max_s: float = 5.0) -> None:
        self.bus = bus
        self.profiles = profiles
        self.devices = devices
        self.gateway_id = gateway_id
        self.state_dir = Path(state_dir)
        self.reconnect_max_s = reconnect_max_s
        self.trust = TrustList(bus, [d.id for d in devices], self.state_dir)
        self.refused: str | None = None  # why the last attempt was refused (untrusted server, ...)
        self.on_connected: list[Callable[[], None]] = []
        self.state = LinkState.DISCONNECTED
        self.state_changed = asyncio.Event()
        self.connections = 0
        self.cache: dict[str, tuple[Any, bool]] = {}
        self.lost = asyncio.Event()
        self.client: Client | None = None
        self.ns = 0
        self.subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._once = OnceLogger(log)

    # -------------------------------------------------------------- supervisor
    def _set_state(self, state: LinkState) -> None:
        if state is not self.state:
            log.debug("%s: %s -> %s", self.bus.id, self.state, state)
            self.state = state
            self.state_changed.set()
            self.state_changed = asyncio.Event()

    async def start(self) -> None:
        why = refusal(self.bus)
        if why is not None:
            self.refused = why
            log.error("%s", why)
            self._set_state(LinkState.REFUSED)
            return
        if self._task is None:
            self.lost = asyncio.Event()
            self._task = asyncio.create_task(self._supervise(), name=f"opcua-{self.bus.id}")
            # give the first connection a moment, so the first polls do not all report "bad"
            deadline = asyncio.get_running_loop().time() + self.bus.timeout_s
            while (self.state is not LinkState.CONNECTED and self.refused is None
                   and asyncio.get_running_loop().time() < deadline):
                changed = self.state_changed
                try:
                    await asyncio.wait_for(changed.wait(), deadline - asyncio.get_running_loop().time())
                except TimeoutError:
                    break

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._drop_client()
        self.on_connected.clear()
        self._set_state(LinkState.CLOSED)

    async def _drop_client(self) -> None:
        client, self.client = self.client, None
        self.subscribed = False
        self.cache.clear()
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except (*_NETWORK_ERRORS, asyncio.CancelledError, RuntimeError):
                pass

    async def _supervise(self) -> None:
        backoff = Backoff(0.5, max(0.5, self.reconnect_max_s))
        while True:
            self._set_state(LinkState.CONNECTING)
            try:
                await self._connect()
            except UntrustedServer as exc:
                self.refused = str(exc)
                self._once.failure(f"opcua {self.bus.id}", self.refused)
                await self._backoff(backoff.next())
                continue
            except (*_NETWORK_ERRORS, RuntimeError, ValueError) as exc:
                self.refused = None
                self._once.failure(f"opcua {self.bus.id}", f"cannot connect to {self.bus.endpoint}: {exc!r}")
                await self._backoff(backoff.next())
                continue
            self._once.recovered(f"opcua {self.bus.id}")
            self.refused = None
            backoff.reset()
            self.connections += 1
            self._set_state(LinkState.CONNECTED)
            for hook in list(self.on_connected):
                hook()
            await self._watch()
            log.warning("%s: connection to %s lost; reconnecting", self.bus.id, self.bus.endpoint)
            await self._drop_client()
            self._set_state(LinkState.DISCONNECTED)

    async def _backoff(self, wait_s: float) -> None:
        await self._drop_client()
        self._set_state(LinkState.BACKOFF)
        await asyncio.sleep(wait_s)

    async def _watch(self) -> None:
        """Return when the connection is lost (callback, status change or failed probe)."""
        assert self.client is not None
        while True:
            try:
                await asyncio.wait_for(self.lost.wait(), 1.0)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(self.client.nodes.server_state.read_value(), self.bus.timeout_s)
            except (*_NETWORK_ERRORS, RuntimeError):
                return

    async def _lost_callback(self, exc: Exception) -> None:
        self.lost.set()

    async def _connect(self) -> None:
        self.lost = asyncio.Event()
        client = Client(self.bus.endpoint, timeout=self.bus.timeout_s, watchdog_intervall=1.0)
        client.application_uri = f"urn:aquavolt:edge:{self.gateway_id}"
        client.name = f"aquavolt edge {self.gateway_id}"
        client.connection_lost_callback = self._lost_callback
        if self.bus.username:
            client.set_user(self.bus.username)
            client.set_password(self.bus.password or "")
        secure = self.bus.security_mode is not SecurityMode.NONE
        if secure and self.bus.security_policy is not SecurityPolicy.NONE:
            cert, key = await self._certificate(client)
            await client.set_security(_POLICY[self.bus.security_policy], str(cert), str(key),
                                      mode=_MODE[self.bus.security_mode])
            # the certificate of the endpoint, which the secure channel will encrypt to: checked
            # before the channel opens; the one the session presents is checked again (below)
            self.trust.check(client.security_policy.peer_certificate)
            client.certificate_validator = self._validate
        self.client = client
        await client.connect()
        self.ns = await client.get_namespace_index(self.bus.namespace_uri)
        if self.bus.subscribe:
            await self._subscribe(client)

    async def _validate(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        """asyncua's hook in CreateSession, before ActivateSession sends the user's identity."""
        self.trust.check(cert.public_bytes(Encoding.DER))

    async def _certificate(self, client: Client) -> tuple[Path, Path]:
        if self.bus.certificate and self.bus.private_key:
            return Path(self.bus.certificate), Path(self.bus.private_key)
        folder = self.state_dir / "opcua"
        cert, key = folder / f"{self.gateway_id}-cert.der", folder / f"{self.gateway_id}-key.pem"
        await client.setup_self_signed_certificate(key, cert, {"organizationName": "aquavolt"})
        return cert, key

    async def _subscribe(self, client: Client) -> None:
        sub = await client.create_subscription(100, _Handler(self))
        plain: list[Node] = []
        for dev in self.devices:
            for p in self.profiles[dev.profile].points:
                node = client.get_node(node_id(self.ns, dev, p))
                if p.deadband_abs is not None and p.type in ("double", "float", "int32", "uint32", "int64"):
                    try:
                        await sub.deadband_monitor(node, p.deadband_abs)
                        continue
                    except ua.UaStatusCodeError as exc:
                        log.info("%s: no deadband filter for %s (%s): plain subscription", self.bus.id,
                                 node, exc)
                plain.append(node)
        if plain:
            results = await sub.subscribe_data_change(plain, sampling_interval=0)
            for node, res in zip(plain, results, strict=True):
                if isinstance(res, ua.StatusCode):
                    log.warning("%s: cannot subscribe %s: %s (polled instead)", self.bus.id, node, res)
        self.subscribed = True

    # -------------------------------------------------------------- reads and writes
    def _need(self, device: Device) -> Client:
        if self.refused is not None and self.state is not LinkState.CONNECTED:
            raise DeviceError(device.id, self.refused)
        if self.state is not LinkState.CONNECTED or self.client is None:
            raise DeviceTimeout(device.id, f"OPC-UA {self.bus.endpoint} {self.state}")
        return self.client

    async def read(self, device: Device, group: str, points: list[PointBase]) -> dict[str, PointResult]:
        client = self._need(device)
        out: dict[str, PointResult] = {}
        missing: list[tuple[OpcuaPoint, str]] = []
        for p in points:
            assert isinstance(p, OpcuaPoint)
            nid = node_id(self.ns, device, p)
            hit = self.cache.get(nid) if self.subscribed else None
            if hit is None:
                missing.append((p, nid))
                continue
            val, good = hit
            out[p.name] = val if good else DeviceError(device.id, f"{p.node}: bad status")
        if missing:
            try:
                dvs = await asyncio.wait_for(
                    client.read_attributes([client.get_node(n) for _, n in missing]), self.bus.timeout_s)
            except (*_NETWORK_ERRORS, RuntimeError) as exc:
                self.lost.set()
                raise DeviceTimeout(device.id, f"OPC-UA read failed: {exc!r}") from exc
            for (p, _), dv in zip(missing, dvs, strict=True):
                if dv.StatusCode is not None and not dv.StatusCode.is_good():
                    out[p.name] = DeviceError(device.id, f"{p.node}: {dv.StatusCode.name}")
                else:
                    out[p.name] = dv.Value.Value if dv.Value is not None else None
        return out

    async def write(self, device: Device, point: PointBase, value: Value) -> None:
        assert isinstance(point, OpcuaPoint)
        client = self._need(device)
        node = client.get_node(node_id(self.ns, device, point))
        variant = ua.Variant(value, _VARIANT[point.type])
        try:
            await asyncio.wait_for(node.write_value(ua.DataValue(variant)), self.bus.timeout_s)
        except (*_NETWORK_ERRORS, RuntimeError) as exc:
            raise DeviceError(device.id, f"OPC-UA write failed: {exc!r}") from exc

    async def read_point(self, device: Device, point: OpcuaPoint) -> PointResult:
        client = self._need(device)
        node = client.get_node(node_id(self.ns, device, point))
        try:
            value: Value = await asyncio.wait_for(node.read_value(), self.bus.timeout_s)
        except (*_NETWORK_ERRORS, RuntimeError) as exc:
            raise DeviceError(device.id, f"OPC-UA read failed: {exc!r}") from exc
        return value
