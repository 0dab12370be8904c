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
