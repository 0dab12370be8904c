"""The docker-compose stack, checked without a Docker engine (there is none on the
machines we build on): the file parses, every service runs an aquavolt command that the
real ``aquavolt`` parser accepts, every mounted config file exists, host ports do not
clash, start order refers to real services, the compose field is the demo field with
only its hosts changed, and the provisioned dashboards are the ones the field builds.

Secure as shipped: every file the stack mounts from ``./secrets`` is one that ``aquavolt
security init`` writes, no secret is committed, MQTT is TLS only with the generated ACL,
InfluxDB needs a password, only Grafana and the operator API are published (on 127.0.0.1),
and ``aquavolt security check`` finds nothing in the shipped files once the secrets exist."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from aquavolt.cli import build_parser
from aquavolt.config import load_field
from aquavolt.dashboards.build import build_all
from aquavolt.dashboards.compose import compose_data
from aquavolt.security import acl_entries, acl_text, check_deployment, init_secrets, mosquitto_conf

from .conftest import DEMO, ROOT

COMPOSE = ROOT / "docker-compose.yml"
FIELD = ROOT / "docker" / "field-compose.yaml"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped stack with its secrets made as docs/security.md says."""
    root = tmp_path_factory.mktemp("stack")
    shutil.copy(COMPOSE, root / "docker-compose.yml")
    shutil.copytree(ROOT / "docker", root / "docker")
    init_secrets(root / "docker" / "field-compose.yaml", root / "secrets")
    return root


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


def test_one_edge_agent_per_gateway_of_the_compose_field(deployed: Path) -> None:
    services = _compose()["services"]
    gateways = [g.id for g in load_field(FIELD).field.gateways]
    for gw in gateways:
        argv = _aquavolt_argv(services[f"edge-{gw}"])
        assert argv[argv.index("--gateway") + 1] == gw
        assert "--state-dir" in argv
        env = (deployed / f"secrets/edge/{gw}/mqtt.env").read_text()
        assert urlsplit(env.strip().split("=", 1)[1]).username == gw  # the ACL's gateway user
    assert sum(n.startswith("edge-") for n in services) == len(gateways)


def test_mounted_files_exist_and_ports_do_not_clash(deployed: Path) -> None:
    doc = _compose()
    host_ports = []
    for name, svc in doc["services"].items():
        for src in [v.split(":", 1)[0] for v in svc.get("volumes", [])] + svc.get("env_file", []):
            if src.startswith("./secrets/"):
                assert (deployed / src).exists(), f"{name}: {src} is not written by security init"
            elif src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} missing"
            else:
                assert src in doc["volumes"], f"{name}: named volume {src} not declared"
        host_ports += [p.rsplit(":", 1)[0] for p in svc.get("ports", [])]
        for dep in svc.get("depends_on", {}):
            assert dep in doc["services"], f"{name} depends on unknown {dep}"
    assert len(host_ports) == len(set(host_ports))
    assert doc["services"]["influxdb"]["image"].startswith("influxdb:1.8")
    for core in ("mosquitto", "influxdb", "grafana", "sim"):
        assert "healthcheck" in doc["services"][core], core


def test_every_mqtt_client_has_its_own_user_over_tls(deployed: Path) -> None:
    doc = _compose()
    users = set(acl_entries(load_field(FIELD).field))
    seen = set()
    for name, svc in doc["services"].items():
        env = dict(svc.get("environment", {}))
        assert not any("://" in str(v) for v in env.values()), f"{name}: URL (secret) in the compose file"
        for f in svc.get("env_file", []):
            for line in (deployed / f).read_text().splitlines():
                key, _, url = line.partition("=")
                if key == "AQUAVOLT_MQTT_URL":
                    parts = urlsplit(url)
                    assert parts.scheme == "mqtts" and parts.port == 8883 and parts.hostname == "mosquitto"
                    assert parts.username in users, name
                    assert parts.username not in seen, f"{name}: {parts.username} shared by two services"
                    seen.add(parts.username)
    assert seen == users - {"healthcheck"}
    conf = (ROOT / "docker/mosquitto/mosquitto.conf").read_text()
    assert conf == mosquitto_conf()
    for line in ("allow_anonymous false", "use_username_as_clientid true", "listener 8883 0.0.0.0",
                 "message_size_limit 1048576"):
        assert line in conf.splitlines()
    assert "1883" not in conf.replace("max_queued", "")
    # the committed ACL is the one generated from the compose field
    assert (ROOT / "docker/mosquitto/acl").read_text() == acl_text(load_field(FIELD).field,
                                                                   source="field-compose.yaml")


def test_no_secret_is_committed_and_only_grafana_and_the_api_are_published() -> None:
    assert not (ROOT / "docker/mosquitto/passwd").exists()
    assert not (ROOT / "docker/mosquitto/users.env").exists()
    text = COMPOSE.read_text()
    once_committed = ("gw-pumping-demo", "collector-demo", "rules-demo", "sim-demo", "healthcheck-demo",
                      ":-aquavolt-demo}", "edge-demo-password")
    for secret in (*once_committed, "GF_SECURITY_ADMIN_PASSWORD", "-P ", "0.0.0.0:"):
        assert secret not in text, secret
    doc = _compose()
    published = {name: svc["ports"] for name, svc in doc["services"].items() if svc.get("ports")}
    assert published == {"grafana": ["127.0.0.1:3000:3000"], "rules": ["127.0.0.1:8470:8470"]}
    assert doc["services"]["influxdb"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert "/secrets/" in (ROOT / ".gitignore").read_text()
    # each edge agent mounts its own gateway's bundle, not the whole field
    for gw in [g.id for g in load_field(FIELD).field.gateways]:
        vols = doc["services"][f"edge-{gw}"]["volumes"]
        assert f"./secrets/edge/{gw}/field.yaml:/etc/aquavolt/field.yaml:ro" in vols
        assert not any("field-compose" in v or v.startswith("./secrets/field.yaml") for v in vols)


def test_security_check_passes_on_the_shipped_stack(deployed: Path) -> None:
    findings = check_deployment(deployed / "secrets" / "field.yaml", [deployed / "docker-compose.yml"])
    assert findings == []


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


def test_the_build_writes_the_shipped_provisioning(tmp_path: Path) -> None:
    """Rebuilding docker/grafana keeps the datasource's read-only user and its password from
    the environment (the build once wrote a datasource without them: Grafana then read nothing
    from the authenticated InfluxDB)."""
    from aquavolt.dashboards.build import write_all

    write_all(load_field(FIELD), tmp_path)
    for rel in ("provisioning/datasources/aquavolt.yaml", "provisioning/dashboards/aquavolt.yaml"):
        assert (tmp_path / rel).read_text() == (ROOT / "docker/grafana" / rel).read_text(), rel


def test_security_check_lists_each_problem_of_an_insecure_copy(
    deployed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stack as it was before it was secured, problem by problem: each is one line."""
    from aquavolt.cli import main

    bad = tmp_path / "stack"
    shutil.copytree(deployed, bad)
    doc = yaml.safe_load((bad / "docker-compose.yml").read_text())
    svc = doc["services"]
    svc["mosquitto"]["ports"] = ["1883:1883"]
    svc["influxdb"]["ports"] = ["8086:8086"]
    svc["influxdb"]["environment"].pop("INFLUXDB_HTTP_AUTH_ENABLED")
    (bad / "secrets/env/influxdb.env").write_text("INFLUXDB_ADMIN_PASSWORD=admin\n")
    svc["grafana"].pop("env_file")
    svc["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "${GRAFANA_ADMIN_PASSWORD:-aquavolt-demo}"
    svc["collector"]["environment"]["AQUAVOLT_MQTT_URL"] = "mqtt://collector:collector-demo@mosquitto:1883"
    svc["rules"]["ports"] = ["8470:8470"]
    i = svc["rules"]["command"].index("--api-tls-cert")
    del svc["rules"]["command"][i:i + 4]  # --api-tls-cert FILE --api-tls-key FILE
    svc["grafana"]["environment"].pop("GF_SERVER_PROTOCOL")
    (bad / "docker-compose.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (bad / "docker/mosquitto/mosquitto.conf").write_text(
        "listener 1883 0.0.0.0\nallow_anonymous false\npassword_file /mosquitto/secrets/passwd\n")
    (bad / "secrets/mosquitto/passwd").chmod(0o644)
    field = yaml.safe_load((bad / "secrets/field.yaml").read_text())
    for gw in field["gateways"]:
        for bus in gw["buses"]:
            if bus["kind"] == "opcua":
                bus.update(security_policy="None", security_mode="None", password="edge-demo-password")
    (bad / "secrets/field.yaml").write_text(yaml.safe_dump(field, sort_keys=False, allow_unicode=True))

    status = main(["security", "check", str(bad / "secrets/field.yaml"), "--compose",
                   str(bad / "docker-compose.yml")])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    expected = {
        "field.yaml:": ["OPC-UA password sent with security None", "default OPC-UA password"],
        "docker-compose.yml:": ["service mosquitto: port 1883:1883 published on every interface",
                                "service influxdb: port 8086:8086 published",
                                "MQTT password without TLS (mqtt://)", "default password in a URL",
                                "API bound to 0.0.0.0 without TLS", "InfluxDB without authentication",
                                "grafana: admin password missing or defaulted",
                                "grafana: served in plain HTTP"],
        "mosquitto.conf": ["plaintext MQTT listener 1883 0.0.0.0", "no acl_file",
                           "client ids not bound to users", "no message_size_limit"],
        "passwd:": ["secret file readable by everybody"],
    }
    for file, reasons in expected.items():
        for reason in reasons:
            assert any(file in line and reason in line for line in out), (file, reason, out)
    assert all(line.startswith(str(bad)) for line in out), out  # each names its file


def _dockerfile() -> list[str]:
    return (ROOT / "docker/Dockerfile").read_text().splitlines()


def test_image_is_pinned_and_built_from_the_sources_only() -> None:
    """No Docker engine runs here: the image's recipe and build context are checked as files."""
    lines = _dockerfile()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    _name, _, tag = base.partition(":")
    assert "@sha256:" in base or re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"floating base image {base}"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for must in (".venv", ".git", "var/", "secrets/", "**/*.key", "*.sqlite"):
        assert must in ignored, f".dockerignore lacks {must}"
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and "./" in line.split()[-1]}
    for pkg in ("aquavolt", "edge", "collector", "rules", "dashboards", "simulators"):  # harness: in aquavolt/
        assert pkg in copied, f"the image lacks {pkg}/ (its entry point would not import)"
    assert any("-c constraints.txt" in line for line in lines), "the image ignores constraints.txt"
    assert any(line.startswith("USER ") and line.split()[1] != "root" for line in lines)


def test_state_folders_are_volumes_owned_by_the_service_user() -> None:
    doc = _compose()
    owned = set()
    for line in _dockerfile():
        owned.update(re.findall(r"(/var/lib/aquavolt/\w+)", line))
    assert any("chown -R aquavolt:aquavolt /var/lib/aquavolt" in line for line in _dockerfile())
    for name, svc in doc["services"].items():
        argv = _aquavolt_argv(svc) or []
        flat = " ".join(argv)
        m = re.search(r"--state-dir (\S+)", flat)
        if svc.get("image") != "aquavolt:latest" or name == "aquavolt-image" or name == "assets":
            continue
        assert m, f"{name}: no explicit --state-dir"
        state = m.group(1)
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", [])}
        assert state in mounts and mounts[state] in doc["volumes"], f"{name}: {state} is not a named volume"
        assert state in owned, f"{name}: {state} is not made and owned by the image's user"


def test_every_long_running_service_has_a_health_check_and_the_collector_a_fixed_id() -> None:
    doc = _compose()
    for name, svc in doc["services"].items():
        if svc.get("restart") == "no":
            continue  # one-shot jobs
        if name.startswith("edge-"):
            continue  # the agents report their health over MQTT, and to systemd on a gateway
        assert "healthcheck" in svc, f"{name}: no health check"
    argv = _aquavolt_argv(doc["services"]["collector"]) or []
    assert "--client-id" in argv, "the collector's client id (and its broker session) must survive a recreate"
