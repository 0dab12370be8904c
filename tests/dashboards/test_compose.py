"""The docker-compose stack, checked without a Docker engine (there is none on the
machines we build on): the file parses, every service runs an aquavolt command that the
real ``aquavolt`` parser accepts, every mounted config file exists, host ports do not
clash, start order refers to real services, the compose field is the demo field with
only its hosts changed, and the provisioned dashboards are the ones the field builds."""

from __future__ import annotations

import json
import shlex
from urllib.parse import urlsplit

import yaml

from aquavolt.cli import build_parser
from aquavolt.config import load_field
from dashboards.build import build_all
from dashboards.compose import compose_data

from .conftest import DEMO, ROOT

COMPOSE = ROOT / "docker-compose.yml"
FIELD = ROOT / "docker" / "field-compose.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _aquavolt_argv(svc: dict) -> list[str] | None:
    if svc.get("image") != "aquavolt:latest":
        return None
    if svc.get("entrypoint") == ["sh", "-c"]:
        script = svc["command"][0]
        tail = script.split("exec aquavolt ", 1)[1]
        return shlex.split(tail)
    return list(svc["command"])


def test_services_run_commands_the_aquavolt_parser_accepts() -> None:
    parser = build_parser()
    seen = set()
    for name, svc in _compose()["services"].items():
        argv = _aquavolt_argv(svc)
        if argv is None or argv == ["--version"]:
            continue
        args = parser.parse_args(argv)
        assert callable(getattr(args, "func", None)), name
        seen.add(argv[0])
    assert {"sim", "edge", "collector", "rules", "dashboards"} <= seen


def test_one_edge_agent_per_gateway_of_the_compose_field() -> None:
    services = _compose()["services"]
    gateways = [g.id for g in load_field(FIELD).field.gateways]
    for gw in gateways:
        argv = _aquavolt_argv(services[f"edge-{gw}"])
        assert argv[argv.index("--gateway") + 1] == gw
        assert "--state-dir" in argv
        user = urlsplit(services[f"edge-{gw}"]["environment"]["AQUAVOLT_MQTT_URL"]).username
        assert user == gw  # the ACL's %u pattern relies on it
    assert sum(n.startswith("edge-") for n in services) == len(gateways)


def test_mounted_files_exist_and_ports_do_not_clash() -> None:
    doc = _compose()
    host_ports = []
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} missing"
            else:
                assert src in doc["volumes"], f"{name}: named volume {src} not declared"
        host_ports += [p.split(":")[0] for p in svc.get("ports", [])]
        for dep in svc.get("depends_on", {}):
            assert dep in doc["services"], f"{name} depends on unknown {dep}"
    assert len(host_ports) == len(set(host_ports))
    assert doc["services"]["influxdb"]["image"].startswith("influxdb:1.8")
    for core in ("mosquitto", "influxdb", "grafana", "sim"):
        assert "healthcheck" in doc["services"][core], core


def test_every_mqtt_user_has_a_password_and_the_broker_needs_one() -> None:
    doc = _compose()
    users = {line.split(":", 1)[0] for line in (ROOT / "docker/mosquitto/passwd").read_text().splitlines()}
    for name, svc in doc["services"].items():
        url = svc.get("environment", {}).get("AQUAVOLT_MQTT_URL")
        if url:
            parts = urlsplit(url)
            assert parts.hostname == "mosquitto" and parts.username in users, name
    conf = (ROOT / "docker/mosquitto/mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file" in conf


def test_compose_field_is_the_demo_field_with_only_hosts_changed() -> None:
    demo = yaml.safe_load(DEMO.read_text())
    compose = yaml.safe_load(FIELD.read_text())
    assert compose == compose_data(demo, "sim")
    for gw_demo, gw_compose in zip(demo["gateways"], compose["gateways"], strict=True):
        for a, b in zip(gw_demo["buses"], gw_compose["buses"], strict=True):
            if a["kind"] == "modbus_tcp":
                assert b["host"] == "sim" and b["port"] == a["port"]
            elif a["kind"] == "opcua":
                assert urlsplit(b["endpoint"]).hostname == "sim"
                assert urlsplit(b["endpoint"]).port == urlsplit(a["endpoint"]).port
            else:
                assert a == b
    strip = {**demo, "gateways": None}
    assert {**compose, "gateways": None} == strip


def test_provisioned_dashboards_are_the_built_ones() -> None:
    """docker/grafana is `aquavolt dashboards build docker/field-compose.yaml --out docker/grafana`."""
    built = build_all(load_field(FIELD))
    for board in built.values():
        on_disk = json.loads((ROOT / "docker/grafana/dashboards" / f"{board['uid']}.json").read_text())
        assert on_disk == board, f"{board['uid']} is out of date: rebuild docker/grafana"
    prov = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/aquavolt.yaml").read_text())
    assert urlsplit(prov["datasources"][0]["url"]).hostname == "influxdb"
