"""The generated least-privilege ACL, live against a real Mosquitto started with the files
``aquavolt security init`` writes (passwd, acl, certificates) and the broker configuration it
generates: a gateway writes only its own topics and no command, only the rules engine writes
commands, a gateway cannot subscribe to another's commands, and a client cannot take over
another user's client id.

A refused publish is proven absent with a marker: a witness subscribed to the whole prefix
receives the marker the same client publishes after it, and messages of one publisher arrive
in order, so the refused one would have arrived first.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from aquavolt.config import load_field
from aquavolt.harness.servers import ManagedServer, _port_open, free_port
from aquavolt.mqtt import make_client
from aquavolt.security import Secrets, acl_entries, hash_password, init_secrets, mosquitto_conf
from aquavolt.settings import MqttSettings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"
P = "aquavolt/v1"
TIMEOUT_S = 10.0


class GeneratedBroker(ManagedServer):
    """Debian's Mosquitto with exactly the generated configuration (paths made local)."""

    name = "mosquitto"

    def __init__(self, workdir: Path, secrets_dir: Path) -> None:
        super().__init__(workdir)
        self.port = free_port()
        conf = mosquitto_conf(port=self.port, bind="127.0.0.1", secrets_dir=str(secrets_dir / "mosquitto"),
                              acl_file=str(secrets_dir / "mosquitto" / "acl"), data_dir=str(self.workdir))
        if os.geteuid() == 0:  # as harness.servers does: root's temporary folders are private
            conf += "user root\n"
        (self.workdir / "mosquitto.conf").write_text(conf)

    def command(self) -> list[str]:
        return ["/usr/sbin/mosquitto", "-c", str(self.workdir / "mosquitto.conf")]

    def ready(self) -> bool:
        return _port_open(self.port)


@dataclass
class Peer:
    client: mqtt.Client
    received: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    connected: threading.Event = field(default_factory=threading.Event)
    refused: threading.Event = field(default_factory=threading.Event)
    disconnects: int = 0
    suback: list[int] = field(default_factory=list)

    def wait_for(self, topic: str, payload: bytes) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: (topic, payload) in self.received, TIMEOUT_S), (topic, payload)

    def got(self, topic: str) -> bool:
        with self.cond:
            return any(t == topic for t, _ in self.received)


@dataclass
class Stack:
    broker: GeneratedBroker
    made: Secrets
    peers: list[Peer] = field(default_factory=list)

    def settings(self, user: str, password: str | None = None) -> MqttSettings:
        return MqttSettings(host="127.0.0.1", port=self.broker.port, username=user,
                            password=password or self.made.mqtt_passwords[user], tls=True,
                            ca_file=str(self.made.folder / "mosquitto" / "ca.pem"))

    def connect(self, user: str, client_id: str | None = None, password: str | None = None,
                wait: bool = True) -> Peer:
        c = make_client(self.settings(user, password), client_id or f"{user}-{uuid.uuid4().hex[:6]}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        peer = Peer(c)

        def on_connect(_c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
            (peer.refused if rc.is_failure else peer.connected).set()

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            with peer.cond:
                peer.received.append((msg.topic, msg.payload))
                peer.cond.notify_all()

        def on_disconnect(*_a: object) -> None:
            peer.disconnects += 1
            peer.refused.set()

        def on_subscribe(_c: object, _u: object, _mid: int, rcs: list[mqtt.ReasonCode], _p: object) -> None:
            with peer.cond:
                peer.suback += [rc.value for rc in rcs]
                peer.cond.notify_all()

        c.on_connect, c.on_message, c.on_disconnect, c.on_subscribe = (on_connect, on_message,
                                                                       on_disconnect, on_subscribe)
        c.connect("127.0.0.1", self.broker.port, keepalive=30)
        c.loop_start()
        self.peers.append(peer)
        if wait:
            assert peer.connected.wait(TIMEOUT_S), f"{user} not connected"
        return peer

    def subscribe(self, peer: Peer, topic: str) -> int:
        n = len(peer.suback)
        peer.client.subscribe(topic, qos=1)
        with peer.cond:
            assert peer.cond.wait_for(lambda: len(peer.suback) > n, TIMEOUT_S)
            return peer.suback[n]


@pytest.fixture(scope="module")
def _generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GeneratedBroker, Secrets]]:
    root = tmp_path_factory.mktemp("generated-broker")
    made = init_secrets(DEMO, root / "secrets", harness=True)
    broker = GeneratedBroker(root / "broker", root / "secrets")
    broker.start()
    try:
        yield broker, made
    finally:
        broker.stop()


@pytest.fixture
def stack(_generated: tuple[GeneratedBroker, Secrets]) -> Iterator[Stack]:
    s = Stack(*_generated)
    try:
        yield s
    finally:
        for p in s.peers:
            p.client.disconnect()
            p.client.loop_stop()


@pytest.fixture
def witness(stack: Stack) -> Peer:
    w = stack.connect("harness")
    assert stack.subscribe(w, f"{P}/#") < 0x80
    return w


def _refused(stack: Stack, witness: Peer, publisher: Peer, topic: str, marker_topic: str) -> bool:
    """Publish on ``topic``, then a marker on an allowed ``marker_topic``; True when the
    witness got the marker and not the first message."""
    publisher.client.publish(topic, b"forged", qos=1)
    token = uuid.uuid4().hex.encode()
    publisher.client.publish(marker_topic, token, qos=1)
    witness.wait_for(marker_topic, token)
    return not witness.got(topic)


def test_a_gateway_writes_only_its_own_topics_and_no_command(stack: Stack, witness: Peer) -> None:
    gw = stack.connect("gw-pumping")
    own = f"{P}/gw/gw-pumping/dev/pump-1/data"
    for topic in (f"{P}/gw/gw-substation/dev/ss1-transformer/data",  # another gateway's data
                  f"{P}/gw/gw-substation/status",
                  f"{P}/gw/gw-pumping/dev/pump-1/cmd",                # its own command
                  f"{P}/gw/gw-substation/dev/ss1-feeder-1/cmd",       # another's command
                  f"{P}/alarm/pump-1/fault",                          # an alarm
                  f"{P}/event/customer",
                  f"{P}/time/grant",                                  # the time keeper's
                  f"{P}/progress/rules"):                             # another's progress
        assert _refused(stack, witness, gw, topic, own), topic
    # what the wire contract needs it to write is allowed
    for topic in (f"{P}/gw/gw-pumping/status", f"{P}/gw/gw-pumping/health",
                  f"{P}/gw/gw-pumping/dev/pump-1/status", f"{P}/gw/gw-pumping/dev/pump-1/reply",
                  f"{P}/progress/edge-gw-pumping", f"{P}/deadletter/edge", f"{P}/time/done/edge-gw-pumping"):
        token = uuid.uuid4().hex.encode()
        gw.client.publish(topic, token, qos=1)
        witness.wait_for(topic, token)


def test_only_the_rules_engine_writes_commands(stack: Stack, witness: Peer) -> None:
    gw = stack.connect("gw-meters-a")
    cmd = f"{P}/gw/gw-meters-a/dev/wm-c0001/cmd"
    assert stack.subscribe(gw, cmd) < 0x80
    collector = stack.connect("collector")
    assert _refused(stack, witness, collector, cmd, f"{P}/deadletter/collector")
    sim = stack.connect("sim")
    assert _refused(stack, witness, sim, cmd, f"{P}/progress/sim")
    rules = stack.connect("rules")
    token = uuid.uuid4().hex.encode()
    rules.client.publish(cmd, token, qos=1)
    gw.wait_for(cmd, token)  # the gateway receives the rules engine's command
    for topic in (f"{P}/deadletter/rules", f"{P}/alarm/pump-1/fault", f"{P}/event/alarm"):
        token = uuid.uuid4().hex.encode()
        rules.client.publish(topic, token, qos=1)
        witness.wait_for(topic, token)


def test_the_collector_acknowledges_and_asks_gateways_again(stack: Stack, witness: Peer) -> None:
    gw = stack.connect("gw-meters-a", client_id="gw-meters-a-ack")
    mark, resend, resent = (f"{P}/gw/gw-meters-a/{t}" for t in ("stored", "resend", "resent"))
    assert stack.subscribe(gw, mark) < 0x80 and stack.subscribe(gw, resend) < 0x80
    # no other gateway forges its mark, asks it or answers for it; nor does the rules engine
    other = stack.connect("gw-meters-b", client_id="gw-meters-b-ack")
    for topic in (mark, resend, resent):
        assert _refused(stack, witness, other, topic, f"{P}/gw/gw-meters-b/health"), topic
    rules = stack.connect("rules", client_id="rules-ack")
    assert _refused(stack, witness, rules, mark, f"{P}/progress/rules")
    collector = stack.connect("collector", client_id="collector-ack")
    for topic in (mark, resend):
        token = uuid.uuid4().hex.encode()
        collector.client.publish(topic, token, qos=1)
        gw.wait_for(topic, token)  # the gateway reads its mark and its resend requests
    token = uuid.uuid4().hex.encode()
    gw.client.publish(resent, token, qos=1)  # and answers on its own branch
    witness.wait_for(resent, token)

def test_a_gateway_cannot_subscribe_to_another_gateways_commands(stack: Stack, witness: Peer) -> None:
    # Mosquitto 2.0 grants the subscription and applies the ACL to every message it would
    # deliver: nothing of another gateway's reaches the spy, whatever filter it uses.
    spy = stack.connect("gw-substation")
    for topic in (f"{P}/gw/gw-meters-b/dev/+/cmd", f"{P}/gw/+/dev/+/cmd", f"{P}/#", "#"):
        stack.subscribe(spy, topic)
    mine = f"{P}/gw/gw-substation/dev/ss1-feeder-1/cmd"
    assert stack.subscribe(spy, mine) < 0x80
    rules = stack.connect("rules", client_id="rules-2")
    other, token = f"{P}/gw/gw-meters-b/dev/wm-c0200/cmd", uuid.uuid4().hex.encode()
    rules.client.publish(other, b"not for you", qos=1)
    rules.client.publish(mine, token, qos=1)
    spy.wait_for(mine, token)
    assert not spy.got(other)
    assert {t for t, _ in spy.received} == {mine}


def test_a_client_cannot_take_over_the_rules_engines_client_id(stack: Stack, witness: Peer) -> None:
    # The client id the rules engine uses (rules/service.py): predictable from the field id.
    cid = "aquavolt-rules-demo-town-aquavolt_v1"
    engine = stack.connect("rules", client_id=cid)
    intruder = stack.connect("gw-meters-b", client_id=cid)  # someone else's credentials
    assert intruder.connected.is_set()
    # the engine is still connected and publishing after the intruder's connection
    token = uuid.uuid4().hex.encode()
    engine.client.publish(f"{P}/progress/rules", token, qos=1)
    witness.wait_for(f"{P}/progress/rules", token)
    assert engine.disconnects == 0 and engine.client.is_connected()
    # the intruder got nothing of the engine's rights
    assert _refused(stack, witness, intruder, f"{P}/gw/gw-pumping/dev/pump-1/cmd",
                    f"{P}/gw/gw-meters-b/health")


def test_wrong_password_and_plaintext_are_refused(stack: Stack) -> None:
    bad = stack.connect("rules", password="not-the-password", wait=False)
    assert bad.refused.wait(TIMEOUT_S) and not bad.connected.is_set()
    bad.client.disconnect()  # no retry
    # The only listener speaks TLS: a plaintext MQTT CONNECT is closed, never answered.
    with socket.create_connection(("127.0.0.1", stack.broker.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")
        try:
            answer = sock.recv(16)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), "plaintext CONNECT got a CONNACK"


def test_generated_secrets_are_private_and_fresh(tmp_path: Path, stack: Stack) -> None:
    folder = stack.made.folder
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix != ".pem":
            assert not p.stat().st_mode & 0o004, f"{p} readable by everybody"
    passwords = set(stack.made.mqtt_passwords.values())
    assert len(passwords) == len(stack.made.mqtt_passwords) and all(len(p) >= 24 for p in passwords)
    text = (folder / "field.yaml").read_text()
    assert "edge-demo-password" not in text  # the committed OPC-UA password is replaced
    assert set(stack.made.mqtt_passwords) == set(acl_entries(load_field(DEMO).field, harness=True))


def test_python_hash_is_mosquittos() -> None:
    # A line of the password file once committed in docker/mosquitto/passwd (password gw-pumping-demo)
    line = ("$7$101$xs8EOjiE45a2ZSxo$iweoHuBMSaWDeB8vOCmKIEfKBWxlelQXcqxmaq5jeipkBwVsszilnOsQSlFk0ndMH"
            "DvU0xjDHczoZO6tUV7YVQ==")
    import base64

    salt = base64.b64decode(line.split("$")[3])
    assert hash_password("gw-pumping-demo", salt) == line


def test_broker_certificate_passes_strict_verification(stack: Stack) -> None:
    """Python 3.13's default VERIFY_X509_STRICT refuses certificates without key identifiers."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(stack.made.folder / "mosquitto" / "ca.pem"))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", stack.broker.port), timeout=TIMEOUT_S) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() is not None


def test_check_flags_the_committed_template_field() -> None:
    """docker/field-compose.yaml is a template: its OPC-UA password is the demo's, committed."""
    from aquavolt.security import check_field

    reasons = [f.reason for f in check_field(ROOT / "docker" / "field-compose.yaml")]
    assert any("default OPC-UA password" in r for r in reasons)
    assert any("committed" in r for r in reasons)


def test_security_init_does_not_replace_existing_secrets(tmp_path: Path) -> None:
    from aquavolt.cli import main as cli_main

    assert cli_main(["security", "init", str(DEMO), "--out", str(tmp_path / "s")]) == 0
    before = (tmp_path / "s" / "mosquitto" / "passwd").read_text()
    assert cli_main(["security", "init", str(DEMO), "--out", str(tmp_path / "s")]) == 1
    assert (tmp_path / "s" / "mosquitto" / "passwd").read_text() == before


def test_generated_operator_token_and_command_key_work_together(stack: Stack) -> None:
    """The engine holds only the token's digest and its signing key; every gateway trusts
    that key: a command signed with it verifies with the gateway's generated settings."""
    from aquavolt.edge.config import load_settings
    from aquavolt.rules.http import load_tokens
    from aquavolt.signing import load_private_key, public_key_from_text, sign, verify
    from aquavolt.wire import Command

    folder = stack.made.folder
    token = (folder / "operator.token").read_text().strip()
    assert (folder / "operator.token").stat().st_mode & 0o077 == 0
    tokens_text = (folder / "rules" / "tokens.yaml").read_text()
    assert token not in tokens_text  # only its digest is stored
    operators = load_tokens(folder / "rules" / "tokens.yaml")
    who = operators.authenticate(token)
    assert who is not None and who.role.name == "OPERATOR"
    assert operators.authenticate(token + "x") is None
    key = load_private_key(folder / "rules" / "command.key")
    for gw in load_field(DEMO).field.gateways:
        settings = load_settings(folder / "edge" / gw.id / "edge-settings.yaml")
        trusted = {k: public_key_from_text(v) for k, v in settings.command_issuers.items()}
        dev = gw.devices[0].id
        cmd = sign(Command(id=f"c-{gw.id}", point="p", value=1.0, ts_ms=1, operator="operator",
                           issuer="rules"), gw.id, dev, key)
        verify(cmd, gw.id, dev, trusted)


def test_a_sparkplug_gateway_is_granted_its_edge_node_topics_only() -> None:
    from aquavolt.field import FieldConfig

    field = FieldConfig.model_validate({
        "id": "town", "sites": [{"id": "s1"}],
        "gateways": [
            {"id": "gw-a", "site": "s1", "buses": [{"kind": "modbus_tcp", "id": "plc"}],
             "northbound": "both", "sparkplug": {"primary_host_id": "centre"}},
            {"id": "gw-b", "site": "s1", "buses": [{"kind": "modbus_tcp", "id": "plc"}]},
        ],
    })
    users = acl_entries(field)
    spb = sorted(g for g in users["gw-a"] if g[1].startswith("spBv1.0/"))
    assert spb == sorted([
        ("write", "spBv1.0/town/NBIRTH/gw-a"), ("write", "spBv1.0/town/NDATA/gw-a"),
        ("write", "spBv1.0/town/NDEATH/gw-a"), ("write", "spBv1.0/town/DBIRTH/gw-a/+"),
        ("write", "spBv1.0/town/DDATA/gw-a/+"), ("write", "spBv1.0/town/DDEATH/gw-a/+"),
        ("read", "spBv1.0/town/NCMD/gw-a"), ("read", "spBv1.0/town/DCMD/gw-a/+"),
        ("read", "spBv1.0/STATE/centre"),
    ])
    assert not [g for g in users["gw-b"] if g[1].startswith("spBv1.0/")]  # northbound aquavolt
    # nobody but the centre's services may write commands; the gateway never
    assert not [g for g in users["gw-a"] if g[0] != "read" and ("CMD" in g[1] or "STATE" in g[1])]


def test_acl_of_a_third_party_sparkplug_node() -> None:
    """A sparkplug gateway (another vendor's edge node) gets its own edge node's topics and
    nothing of aquavolt's; the collector and the rules engine read it and may ask it for a
    rebirth; only the collector writes a primary host STATE."""
    field = load_field(Path(__file__).parents[1] / "sparkplug" / "field.yaml").field
    users = acl_entries(field)
    node = "spBv1.0/Plant1/{}/PLC-7"
    assert sorted(users["gw-plc"]) == sorted([
        *(("write", node.format(t)) for t in ("NBIRTH", "NDATA", "NDEATH")),
        *(("write", node.format(t) + "/+") for t in ("DBIRTH", "DDATA", "DDEATH")),
        ("read", node.format("NCMD")), ("read", node.format("DCMD") + "/+"), ("read", "spBv1.0/STATE/+")])
    centre = [("read", "spBv1.0/Plant1/+/PLC-7"), ("read", "spBv1.0/Plant1/+/PLC-7/+"),
              ("write", node.format("NCMD"))]
    assert [g for g in users["rules"] if g[1].startswith("spBv1.0/")] == centre
    assert [g for g in users["collector"] if g[1].startswith("spBv1.0/")] == [*centre,
                                                                              ("readwrite", "spBv1.0/STATE/+")]
