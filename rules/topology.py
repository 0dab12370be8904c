"""Suppression by topology: which alarms hide a device's loss-of-data alarms.

One fault, one alarm: a meter's ``comm_fail``, ``stale`` and ``bad_quality`` are suppressed
while its transformer or feeder has an active ``outage``, its feeder's breaker is open, its
gateway is offline, or its bus or gateway has a rolled-up ``comm_fail`` (``rules.comm``:
asset ``{gateway}.{bus}`` or the gateway id); ``stale`` and ``bad_quality`` also while the
device itself is in ``comm_fail`` (the loss of communication is the one alarm). A bus's
``comm_fail`` is suppressed by its gateway's ``comm_fail`` or ``gateway_offline``; a
gateway's own ``stale`` (no message at all, ``rules.core``) by its ``gateway_offline`` and
rolled-up ``comm_fail``. A bus or gateway roll-up is also suppressed by an outage (or open
breaker) upstream of at least ``comm_fail.rollup_fraction`` of its devices: the meters behind
a concentrator that lost supply do not answer because of the outage, which is the one alarm.
A feeder's outage is the parent of its bay's breaker trip alarm (``CONSEQUENCES``): one
incident, shown as the outage.
"""

from __future__ import annotations

from aquavolt.config import LoadedField
from aquavolt.rules.comm import groups as comm_groups

SUPPRESSIBLE_ORDER = ("comm_fail", "stale", "bad_quality")
SUPPRESSIBLE = frozenset(SUPPRESSIBLE_ORDER)
"""Device conditions that an upstream fault explains."""

CONSEQUENCES: dict[str, frozenset[str]] = {"breaker_closed": frozenset({"outage"})}
"""Conditions grouped under a parent alarm, the incident, and the parent conditions that
group them: a feeder bay's ``breaker_closed`` (the trip) under its feeder's ``outage``, which
tells the incident's story (customers, duration, class). The grouped alarm carries ``parent``
and is not annunciated on its own; nothing else hides it (a breaker alarm is not a loss of
data)."""

Suppressor = tuple[str, str]
"""(asset, condition) of an alarm that, while active, suppresses others."""


def build_suppressors(loaded: LoadedField) -> dict[str, list[Suppressor]]:
    """For each device, the alarms that suppress its loss-of-data alarms."""
    f = loaded.field
    upstream: dict[str, list[Suppressor]] = {}

    def add(dev: str | None, sup: Suppressor) -> None:
        if dev is not None and sup not in upstream.setdefault(dev, []):
            upstream[dev].append(sup)

    feeder_of_tx = {t: fd for t, (_s, fd, _t) in f.transformers.items()}

    def electric(dev: str | None, tx: str | None) -> None:
        if dev is None or tx is None or tx not in feeder_of_tx:
            return
        fd = feeder_of_tx[tx]
        add(dev, (tx, "outage"))
        add(dev, (fd.id, "outage"))
        if fd.device is not None:
            add(dev, (fd.device, "breaker_closed"))

    for c in f.customers:
        electric(c.electricity_meter, c.transformer)
    for _s in f.electricity.substations:  # one incident: the outage, with the breaker trip under it
        for fd in _s.feeders:
            if fd.device is not None:
                add(fd.device, (fd.id, "outage"))
    for t, (_s, _fd, tr) in f.transformers.items():
        electric(tr.device, t)
    supply = {dev: list(sups) for dev, sups in upstream.items()}  # the electric suppressors only
    for gw in f.gateways:
        add(gw.id, (gw.id, "gateway_offline"))
        add(gw.id, (gw.id, "comm_fail"))
    for dev, (gw, _d) in f.devices.items():
        add(dev, (gw.id, "gateway_offline"))
        add(dev, (dev, "comm_fail"))
    # loss of communication rolled up to a bus or a gateway (rules.comm)
    fraction = f.rules.comm_fail.rollup_fraction
    for asset, kind, gw_id, devices in comm_groups(loaded):
        for dev in devices:
            add(dev, (asset, "comm_fail"))
        add(asset, (gw_id, "gateway_offline"))
        if kind == "bus":
            add(asset, (gw_id, "comm_fail"))
        covered: dict[Suppressor, int] = {}
        for dev in devices:
            for sup in supply.get(dev, ()):
                covered[sup] = covered.get(sup, 0) + 1
        for sup, n in covered.items():
            if devices and n >= fraction * len(devices):
                add(asset, sup)
    return upstream
