"""The field's assets as the control room shows them: id, kind, name and position.

The overview map reads positions from the ``asset_location`` measurement, which
``aquavolt dashboards assets FIELD.yaml`` writes from the field file (InfluxQL cannot join
a query with a static table, and the map's markers need latitude and longitude per row).
An asset without its own position takes its parent's (a feeder its substation's, a device
its gateway's).
"""

from __future__ import annotations

from dataclasses import dataclass

from aquavolt import schema
from aquavolt.field import FieldConfig, Located


@dataclass(frozen=True)
class Asset:
    id: str
    kind: str
    name: str
    latitude_deg: float | None
    longitude_deg: float | None


def _pos(item: Located, parent: Located | None = None) -> tuple[float | None, float | None]:
    if item.latitude_deg is not None and item.longitude_deg is not None:
        return item.latitude_deg, item.longitude_deg
    if parent is not None:
        return parent.latitude_deg, parent.longitude_deg
    return None, None


def field_assets(field: FieldConfig) -> list[Asset]:
    """Every asset of the field, in a stable order; ids are unique per kind."""
    out: list[Asset] = []
    sites = {s.id: s for s in field.sites}
    for gw in field.gateways:
        out.append(Asset(gw.id, "gateway", gw.name or gw.id, *_pos(gw, sites.get(gw.site))))
        for d in gw.devices:
            out.append(Asset(d.id, "device", d.name or d.id, *_pos(d, gw)))
    for z in field.water.zones:
        out.append(Asset(z.id, "zone", z.name or z.id, *_pos(z, sites.get(z.site))))
    for t in field.water.tanks:
        out.append(Asset(t.id, "tank", t.name or t.id, *_pos(t)))
    for p in field.water.pumps:
        out.append(Asset(p.id, "pump", p.name or p.id, *_pos(p)))
    for s in field.electricity.substations:
        out.append(Asset(s.id, "substation", s.name or s.id, *_pos(s, sites.get(s.site))))
        for f in s.feeders:
            out.append(Asset(f.id, "feeder", f.name or f.id, *_pos(s)))
            for tr in f.transformers:
                out.append(Asset(tr.id, "transformer", tr.name or tr.id, *_pos(tr, s)))
    for c in field.customers:
        out.append(Asset(c.id, "customer", c.name or c.id, *_pos(c)))
    return out


def location_lines(field: FieldConfig, ts_ms: int) -> list[str]:
    """Line protocol for ``asset_location``, one point per located asset."""
    return [
        schema.line(
            schema.ASSET_LOCATION,
            {"asset": a.id, "kind": a.kind},
            {"latitude_deg": float(a.latitude_deg), "longitude_deg": float(a.longitude_deg), "name": a.name},
            ts_ms,
        )
        for a in field_assets(field)
        if a.latitude_deg is not None and a.longitude_deg is not None
    ]


def customers_of(field: FieldConfig) -> dict[str, list[str]]:
    """Customers supplied by each transformer and each feeder (outage impact)."""
    out: dict[str, list[str]] = {}
    feeder_of = {t: f.id for t, (_s, f, _t) in field.transformers.items()}
    for c in field.customers:
        if c.transformer:
            out.setdefault(c.transformer, []).append(c.id)
            if c.transformer in feeder_of:
                out.setdefault(feeder_of[c.transformer], []).append(c.id)
    return out
