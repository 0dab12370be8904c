from pathlib import Path

from aquavolt.config import load_field
from aquavolt.field import ModbusRtuBus, ModbusTcpBus, OpcuaBus
from aquavolt.harness.relocate import relocate_file

DEMO = Path(__file__).parents[2] / "examples" / "demo-town.yaml"


def test_relocated_demo_is_valid_and_moved(tmp_path: Path) -> None:
    orig = load_field(DEMO).field
    moved = load_field(relocate_file(DEMO, tmp_path / "field.yaml")).field
    assert [g.id for g in moved.gateways] == [g.id for g in orig.gateways]
    for g0, g1 in zip(orig.gateways, moved.gateways, strict=True):
        for b0, b1 in zip(g0.buses, g1.buses, strict=True):
            if isinstance(b1, ModbusTcpBus):
                assert isinstance(b0, ModbusTcpBus) and b1.port != b0.port
            elif isinstance(b1, ModbusRtuBus):
                assert b1.serial_port.startswith(str(tmp_path)) and b1.parity == "N"
            else:
                assert isinstance(b1, OpcuaBus) and isinstance(b0, OpcuaBus)
                assert b1.endpoint != b0.endpoint and b1.endpoint.endswith("/aquavolt/rtu")
    assert moved.customers == orig.customers


def test_free_ports_handed_out_are_never_repeated() -> None:
    """Two buses of one relocated field must never share a port (a replay once failed so)."""
    from aquavolt.harness.servers import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_run_can_switch_gateways_to_sparkplug(tmp_path: Path) -> None:
    """``--sparkplug GATEWAY`` (demo, replay): the run's copy of the field has that gateway as a
    Sparkplug B edge node, the others unchanged; a gateway the field lacks is one clear line."""
    import subprocess
    import sys

    import pytest

    moved = load_field(relocate_file(DEMO, tmp_path / "field.yaml", sparkplug=("gw-pumping",))).field
    north = {g.id: g.northbound for g in moved.gateways}
    assert north.pop("gw-pumping") == "sparkplug" and set(north.values()) == {"aquavolt"}
    from aquavolt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--sparkplug: gw-nowhere: no such gateway .*gw-pumping"):
        relocate_file(DEMO, tmp_path / "bad.yaml", sparkplug=("gw-nowhere",))
    scenario = DEMO.parent / "scenarios" / "pump-trip.yaml"
    run = subprocess.run([sys.executable, "-m", "aquavolt.cli", "replay", str(scenario), "--sparkplug", "gw-nowhere",
                          "--workdir", str(tmp_path / "run")], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"{DEMO.parent / 'small-town.yaml'}: --sparkplug: gw-nowhere: no such gateway "
        "(the field has gw-meters-a, gw-pumping, gw-substation)")  # pump-trip.yaml's field
