"""``aquavolt edge export``: one gateway's configuration and secrets, nothing else. Before it,
each gateway was installed with the whole field file: every gateway's OPC-UA password and
240 customers' phone numbers."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from aquavolt.cli import main
from aquavolt.config import load_field
from aquavolt.edge.config import load_gateway
from aquavolt.security import init_secrets

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"


def test_export_writes_one_gateway_and_its_secrets_only(tmp_path: Path) -> None:
    made = init_secrets(DEMO, tmp_path / "secrets")
    deployed = tmp_path / "secrets" / "field.yaml"
    out = tmp_path / "gw-substation"
    assert main(["edge", "export", str(deployed), "gw-substation", "--out", str(out),
                 "--secrets", str(tmp_path / "secrets"), "--broker", "scada.example:8883"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "field.yaml", "mqtt.env"]
    text = "\n".join(p.read_text() for p in out.iterdir())

    field = load_field(DEMO).field
    for c in field.customers:  # no customer's phone number, nor anything else about them
        assert c.phone not in text and c.id not in text
    assert not re.search(r"\+[1-9][0-9]{6,14}", text)
    for user, password in made.mqtt_passwords.items():  # no other user's broker password
        assert (password in text) == (user == "gw-substation"), user
    raw = yaml.safe_load(deployed.read_text())
    for gw in raw["gateways"]:
        for bus in gw["buses"]:
            if bus.get("password"):
                assert (bus["password"] in text) == (gw["id"] == "gw-substation")
    for other in (g.id for g in field.gateways if g.id != "gw-substation"):
        assert other not in text

    url = urlsplit((out / "mqtt.env").read_text().strip().split("=", 1)[1])
    assert (url.scheme, url.hostname, url.port, url.username) == ("mqtts", "scada.example", 8883,
                                                                   "gw-substation")
    for p in (out / "field.yaml", out / "mqtt.env"):
        assert not p.stat().st_mode & 0o004, f"{p} readable by everybody"

    # the bundle is a valid field and the edge's own loader takes it
    assert main(["check", str(out / "field.yaml")]) == 0
    cfg = load_gateway(out / "field.yaml", "gw-substation")
    assert [d.id for d in cfg.gateway.devices] == [d.id for d in field.gateway("gw-substation").devices]
    opcua = next(b for b in cfg.gateway.buses if b.kind == "opcua")
    assert opcua.password and opcua.password != "edge-demo-password"


def test_export_without_secrets_and_of_an_unknown_gateway(tmp_path: Path) -> None:
    out = tmp_path / "gw-pumping"
    assert main(["edge", "export", str(DEMO), "gw-pumping", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["field.yaml"]
    assert load_gateway(out / "field.yaml", "gw-pumping").gateway.id == "gw-pumping"
    assert main(["edge", "export", str(DEMO), "gw-nowhere", "--out", str(tmp_path / "x")]) == 1

