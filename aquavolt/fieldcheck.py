"""Cross-reference checks of a field: what the models alone cannot see.

Each check yields ``(path, reason)`` with the path as a tuple of keys and indexes, so that
the loader can name the file, the line and the path of every problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aquavolt.field import FieldConfig, Gateway, ModbusRtuBus, ModbusTcpBus, OpcuaBus
from aquavolt.profiles import ModbusProfile, OpcuaProfile

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


def _unique(items: list[Any], loc: Loc, what: str) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            yield (*loc, i, "id"), f"{what} id {item.id!r} already used at {loc[-1]}[{seen[item.id]}]"
        else:
            seen[item.id] = i


def cross_check(
    field: FieldConfig, profiles: dict[str, ModbusProfile | OpcuaProfile]
) -> Iterator[Problem]:
    sites = {s.id for s in field.sites}
    yield from _unique(field.sites, ("sites",), "site")
    yield from _unique(field.gateways, ("gateways",), "gateway")
    yield from _gateways(field, profiles, sites)
    yield from _water(field, sites)
    yield from _electricity(field, sites)
    yield from _customers(field)
    yield from _rules(field, profiles)


def _opcua_security(bus: OpcuaBus, b: Loc) -> Iterator[Problem]:
    secure = bus.security_mode.value != "None"
    if secure and bus.security_policy.value == "None":
        yield (*b, "security_policy"), "a Sign mode needs a security policy"
    if not secure and bus.security_policy.value != "None":
        yield (*b, "security_mode"), "a security policy needs security_mode Sign or SignAndEncrypt"
    if bus.password and not secure:
        yield (*b, "password"), (
            "a password needs security_mode Sign or SignAndEncrypt (with None anyone on the path reads it)"
        )
    if secure and not (bus.server_certificates or bus.server_fingerprints or bus.trust_on_first_use):
        yield (*b, "security_mode"), (
            f"{bus.security_mode.value} needs a trusted server certificate: server_certificates, "
            "server_fingerprints or trust_on_first_use"
        )


def _gateways(
    field: FieldConfig, profiles: dict[str, ModbusProfile | OpcuaProfile], sites: set[str]
) -> Iterator[Problem]:
    device_seen: dict[str, str] = {}
    nodes: dict[tuple[str, str], str] = {}
    for gi, gw in enumerate(field.gateways):
        g: Loc = ("gateways", gi)
        if gw.site not in sites:
            yield (*g, "site"), f"no site {gw.site!r}"
        yield from _unique(gw.buses, (*g, "buses"), "bus")
        ports: dict[str, str] = {}
        for bi, bus in enumerate(gw.buses):
            if isinstance(bus, ModbusRtuBus):
                if bus.serial_port in ports:
                    yield (*g, "buses", bi, "serial_port"), (
                        f"serial port {bus.serial_port} already used by bus {ports[bus.serial_port]}"
                    )
                ports[bus.serial_port] = bus.id
            if isinstance(bus, OpcuaBus):
                yield from _opcua_security(bus, (*g, "buses", bi))
        for group, interval in gw.poll_intervals_s.items():
            if interval <= 0:
                yield (*g, "poll_intervals_s", group), "poll interval must be positive"
        node = gw.sparkplug_node(field.id)
        if node is not None:
            if node in nodes:
                yield (*g, "sparkplug"), (f"edge node {node[0]}/{node[1]} already used by gateway "
                                          f"{nodes[node]}")
            nodes[node] = gw.id
        if gw.kind == "sparkplug":
            yield from _sparkplug_gateway(gw, profiles, g, device_seen)
            continue
        if not gw.buses:
            yield (*g, "buses"), "an aquavolt gateway needs at least one bus"
        units: dict[tuple[str, int | str], str] = {}
        for di, dev in enumerate(gw.devices):
            d: Loc = (*g, "devices", di)
            if dev.id in device_seen:
                yield (*d, "id"), f"device id {dev.id!r} already used in gateway {device_seen[dev.id]}"
            device_seen[dev.id] = gw.id
            dbus = gw.bus(dev.bus) if dev.bus is not None else None
            prof = profiles.get(dev.profile)
            if prof is None:
                yield (*d, "profile"), f"no device profile {dev.profile!r}"
            if dev.sparkplug is not None:
                yield (*d, "sparkplug"), f"gateway {gw.id} is an aquavolt gateway: no Sparkplug mapping here"
            if dev.bus is None:
                yield (*d, "bus"), f"a device of aquavolt gateway {gw.id} needs a bus"
                continue
            if dbus is None:
                yield (*d, "bus"), f"no bus {dev.bus!r} in gateway {gw.id}"
                continue
            for group, interval in dev.poll_intervals_s.items():
                if interval <= 0:
                    yield (*d, "poll_intervals_s", group), "poll interval must be positive"
            if isinstance(dbus, ModbusTcpBus | ModbusRtuBus):
                if prof is not None and not isinstance(prof, ModbusProfile):
                    yield (*d, "profile"), f"profile {prof.id} is OPC-UA but bus {dbus.id} is Modbus"
                if dev.unit_id is None:
                    yield (*d, "unit_id"), "a Modbus device needs a unit_id"
                elif not 1 <= dev.unit_id <= 247:
                    yield (*d, "unit_id"), f"unit id {dev.unit_id} is outside 1..247"
                elif (dbus.id, dev.unit_id) in units:
                    other = units[(dbus.id, dev.unit_id)]
                    yield (*d, "unit_id"), f"unit id {dev.unit_id} on bus {dbus.id} already used by {other}"
                else:
                    units[(dbus.id, dev.unit_id)] = dev.id
            else:
                if prof is not None and not isinstance(prof, OpcuaProfile):
                    yield (*d, "profile"), f"profile {prof.id} is Modbus but bus {dbus.id} is OPC-UA"
                if not dev.node_prefix:
                    yield (*d, "node_prefix"), "an OPC-UA device needs a node_prefix"
                elif (dbus.id, dev.node_prefix) in units:
                    yield (*d, "node_prefix"), f"node prefix {dev.node_prefix} already used"
                else:
                    units[(dbus.id, dev.node_prefix)] = dev.id
        for wi, ref in enumerate(gw.writable_points):
            dev_id, _, point = ref.partition(".")
            entry = field.devices.get(dev_id)
            if entry is None or entry[0].id != gw.id:
                yield (*g, "writable_points", wi), f"no device {dev_id!r} in gateway {gw.id}"
                continue
            prof = profiles.get(entry[1].profile)
            p = prof.by_name.get(point) if prof else None
            if prof is not None and p is None:
                yield (*g, "writable_points", wi), f"profile {prof.id} has no point {point!r}"
            elif p is not None and not p.writable:
                yield (*g, "writable_points", wi), f"point {point} is not writable in {prof.id}"  # type: ignore[union-attr]


def _sparkplug_gateway(
    gw: Gateway, profiles: dict[str, ModbusProfile | OpcuaProfile], g: Loc, device_seen: dict[str, str],
) -> Iterator[Problem]:
    """A third-party Sparkplug B edge node: no buses, every device mapped to a Sparkplug
    device (or the node itself) and its metrics to points of the device's profile."""
    if gw.northbound != "aquavolt":
        yield (*g, "northbound"), "a sparkplug gateway is another vendor's edge node: no northbound setting"
    if gw.sparkplug is not None and (gw.sparkplug.primary_host_id or gw.sparkplug.accept_dcmd):
        yield (*g, "sparkplug"), ("primary_host_id and accept_dcmd are settings of an aquavolt edge node, "
                                  "not of a sparkplug gateway")
    if gw.buses:
        yield (*g, "buses"), "a sparkplug gateway has no buses: its edge node reads its own devices"
    if gw.writable_points:
        yield (*g, "writable_points"), "commands to a sparkplug gateway are not supported"
    sources: dict[str | None, str] = {}
    for di, dev in enumerate(gw.devices):
        d: Loc = (*g, "devices", di)
        if dev.id in device_seen:
            yield (*d, "id"), f"device id {dev.id!r} already used in gateway {device_seen[dev.id]}"
        device_seen[dev.id] = gw.id
        prof = profiles.get(dev.profile)
        if prof is None:
            yield (*d, "profile"), f"no device profile {dev.profile!r}"
        if dev.bus is not None:
            yield (*d, "bus"), f"gateway {gw.id} is a sparkplug gateway: its devices have no bus"
        sp = dev.sparkplug
        if sp is None:
            yield (*d, "sparkplug"), (f"a device of sparkplug gateway {gw.id} needs sparkplug: "
                                      "{device_id, metrics}")
            continue
        if sp.device_id in sources:
            what = f"Sparkplug device {sp.device_id!r}" if sp.device_id else "the edge node's own metrics"
            yield (*d, "sparkplug", "device_id"), f"{what} already mapped to device {sources[sp.device_id]}"
        sources[sp.device_id] = dev.id
        points: set[str] = set()
        for name, point in sp.metrics.items():
            if prof is not None and point not in prof.by_name:
                yield (*d, "sparkplug", "metrics", name), f"profile {prof.id} has no point {point!r}"
            elif point in points:
                yield (*d, "sparkplug", "metrics", name), f"point {point} already mapped from another metric"
            points.add(point)


def _ref(field: FieldConfig, loc: Loc, dev: str | None) -> Iterator[Problem]:
    if dev is not None and dev not in field.devices:
        yield loc, f"no device {dev!r} in any gateway"


def _water(field: FieldConfig, sites: set[str]) -> Iterator[Problem]:
    w = field.water
    zones = {z.id for z in w.zones}
    tanks = {t.id for t in w.tanks}
    yield from _unique(w.zones, ("water", "zones"), "zone")
    yield from _unique(w.tanks, ("water", "tanks"), "tank")
    yield from _unique(w.pumps, ("water", "pumps"), "pump")
    for zi, z in enumerate(w.zones):
        loc: Loc = ("water", "zones", zi)
        if z.site not in sites:
            yield (*loc, "site"), f"no site {z.site!r}"
        for key in ("inlet_meters", "outlet_meters", "pressure_sensors"):
            for i, dev in enumerate(getattr(z, key)):
                yield from _ref(field, (*loc, key, i), dev)
    for ti, t in enumerate(w.tanks):
        loc = ("water", "tanks", ti)
        if t.zone not in zones:
            yield (*loc, "zone"), f"no zone {t.zone!r}"
        yield from _ref(field, (*loc, "device"), t.device)
        if t.low_level_m >= t.high_level_m or t.high_level_m > t.height_m:
            yield (*loc, "high_level_m"), "need low_level_m < high_level_m <= height_m"
    for pi, p in enumerate(w.pumps):
        loc = ("water", "pumps", pi)
        if p.zone not in zones:
            yield (*loc, "zone"), f"no zone {p.zone!r}"
        yield from _ref(field, (*loc, "device"), p.device)
        if p.tank is not None and p.tank not in tanks:
            yield (*loc, "tank"), f"no tank {p.tank!r}"
        if p.rated_head_m >= p.shutoff_head_m:
            yield (*loc, "rated_head_m"), "rated head must be below shut-off head"


def _electricity(field: FieldConfig, sites: set[str]) -> Iterator[Problem]:
    subs = field.electricity.substations
    yield from _unique(subs, ("electricity", "substations"), "substation")
    feeders: set[str] = set()
    transformers: set[str] = set()
    for si, s in enumerate(subs):
        loc: Loc = ("electricity", "substations", si)
        if s.site not in sites:
            yield (*loc, "site"), f"no site {s.site!r}"
        yield from _ref(field, (*loc, "device"), s.device)
        for fi, f in enumerate(s.feeders):
            floc: Loc = (*loc, "feeders", fi)
            if f.id in feeders:
                yield (*floc, "id"), f"feeder id {f.id!r} already used"
            feeders.add(f.id)
            yield from _ref(field, (*floc, "device"), f.device)
            for ti, t in enumerate(f.transformers):
                tloc: Loc = (*floc, "transformers", ti)
                if t.id in transformers:
                    yield (*tloc, "id"), f"transformer id {t.id!r} already used"
                transformers.add(t.id)
                yield from _ref(field, (*tloc, "device"), t.device)


def _customers(field: FieldConfig) -> Iterator[Problem]:
    zones = {z.id for z in field.water.zones}
    yield from _unique(field.customers, ("customers",), "customer")
    meters: dict[str, str] = {}
    for ci, c in enumerate(field.customers):
        loc: Loc = ("customers", ci)
        if c.water_meter is None and c.electricity_meter is None:
            yield loc, f"customer {c.id} has neither a water nor an electricity meter"
        for key, owner_key, owners in (
            ("water_meter", "zone", zones),
            ("electricity_meter", "transformer", set(field.transformers)),
        ):
            meter = getattr(c, key)
            owner = getattr(c, owner_key)
            if meter is None:
                continue
            yield from _ref(field, (*loc, key), meter)
            if meter in meters:
                yield (*loc, key), f"meter {meter} already belongs to customer {meters[meter]}"
            meters[meter] = c.id
            if owner is None:
                yield (*loc, owner_key), f"a customer with a {key} needs a {owner_key}"
            elif owner not in owners:
                yield (*loc, owner_key), f"no {owner_key} {owner!r}"


def _rules(field: FieldConfig, profiles: dict[str, ModbusProfile | OpcuaProfile]) -> Iterator[Problem]:
    for key in ("limits", "rates", "discrete"):
        for i, rule in enumerate(getattr(field.rules, key)):
            loc: Loc = ("rules", key, i)
            if rule.device is not None:
                entry = field.devices.get(rule.device)
                if entry is None:
                    yield (*loc, "device"), f"no device {rule.device!r} in any gateway"
                    continue
                prof = profiles.get(entry[1].profile)
            else:
                prof = profiles.get(rule.profile)
                if prof is None:
                    yield (*loc, "profile"), f"no device profile {rule.profile!r}"
                    continue
            if prof is not None and rule.point not in prof.by_name:
                yield (*loc, "point"), f"profile {prof.id} has no point {rule.point!r}"
            armed = getattr(rule, "armed_by", None)
            if prof is not None and armed is not None and armed not in prof.by_name:
                yield (*loc, "armed_by"), f"profile {prof.id} has no point {armed!r}"
