"""Golden cases: a folder with a field (or the shared one), a ``rules:`` section, input
events and the expected alarm events. The core runs them without any server.

A case folder holds::

    config.yaml     the field's ``rules:`` section for this case
    field.yaml      optional: the field (else ``field.yaml`` in the parent folder)
    input.yaml      events in arrival order, each with ``at`` (ms) and one of:
                      batch: {device, readings: [{point, value, quality?, ts_ms?}], historical?}
                      device_status: {device, state, reason?}
                      gateway_status: {gateway, state, bd_seq?}
                      condition: {asset, condition, active, priority?, message?, details?}
                                                                   (a detector's output)
                      tick: true                                   (event time reached at: flush)
                      ack: {ids?: [..], seen_seq?: N | latest, by}        (operator clock = at)
                      shelve: {id, by, reason, for_s} / unshelve: {id, by}
                      comment: {id, by, text} / out_of_service: {id, by, reason} / in_service
    expected.yaml   alarm events: [{ts_ms, alarm_id, transition, state, by?, parent?, outage?}]

Messages (batch, device_status, gateway_status) go through the core's reorder buffer; every
other event is something that happens once event time has reached ``at`` (an operator acts on
what the screen shows, a detector's output, time moving on), so the buffer is flushed up to
``at`` before it. Before every input event the manager expires shelves due by ``at``
(operator clock). At the end the buffer is flushed whole (the end of the stream).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aquavolt.config import LoadedField, load_field
from aquavolt.rulecfg import Priority, RulesConfig
from aquavolt.rules.api import Condition
from aquavolt.rules.core import Core, Output
from aquavolt.wire import AlarmEvent, Batch, DeviceStatus, GatewayStatus, Reading

CASE_KEYS = ("ts_ms", "alarm_id", "transition", "state")
MESSAGES = ("batch", "device_status", "gateway_status")


def load_case_field(folder: Path) -> LoadedField:
    """The case's field with the case's rules section in place of the field's."""
    base = folder / "field.yaml" if (folder / "field.yaml").exists() else folder.parent / "field.yaml"
    loaded = load_field(base)
    cfg_path = folder / "config.yaml"
    if cfg_path.exists():
        rules = RulesConfig.model_validate(yaml.safe_load(cfg_path.read_text()) or {})
        loaded = LoadedField(loaded.path, loaded.field.model_copy(update={"rules": rules}), loaded.profiles)
    return loaded


def run_events(core: Core, events: list[dict[str, Any]]) -> list[AlarmEvent]:
    """Feed case input events to a core; every alarm event, in order."""
    f = core.loaded.field
    out = Output()
    mgr = core.manager
    end = 0
    for ev in events:
        at = int(ev["at"])
        end = max(end, at)
        if not any(k in ev for k in MESSAGES):
            out.extend(core.flush(at))
        out.events += mgr.expire(at)
        if "batch" in ev:
            b = ev["batch"]
            gw = f.devices[b["device"]][0].id
            readings = [Reading(point=r["point"], value=r.get("value"), ts_ms=int(r.get("ts_ms", at)),
                                quality=r.get("quality", "good")) for r in b["readings"]]
            out.extend(core.batch(Batch(gateway=gw, device=b["device"], seq=0, readings=readings,
                                        historical=b.get("historical", False))))
        elif "device_status" in ev:
            d = ev["device_status"]
            gw = f.devices[d["device"]][0].id
            out.extend(core.device_status(DeviceStatus(gateway=gw, device=d["device"], state=d["state"],
                                                       ts_ms=at, reason=d.get("reason", ""))))
        elif "gateway_status" in ev:
            g = ev["gateway_status"]
            out.extend(core.gateway_status(GatewayStatus(gateway=g["gateway"], state=g["state"],
                                                         bd_seq=g.get("bd_seq", 0), ts_ms=at)))
        elif "condition" in ev:
            c = ev["condition"]
            out.extend(core.condition(Condition(c["asset"], c["condition"], bool(c["active"]), at,
                                                Priority(c.get("priority", "high")),
                                                message=c.get("message", ""),
                                                details=c.get("details", {}))))
        elif "tick" in ev:
            pass  # the flush above
        elif "ack" in ev:
            a = ev["ack"]
            seen = a.get("seen_seq", "latest")
            seen_seq = mgr.seq if seen == "latest" else int(seen)
            acked, _skipped = mgr.acknowledge(a.get("ids"), seen_seq, a["by"], at)
            out.events += acked
        elif "shelve" in ev:
            s = ev["shelve"]
            out.events += mgr.shelve(s["id"], s["by"], s["reason"], at + int(s["for_s"] * 1000), at)
        elif "unshelve" in ev:
            out.events += mgr.unshelve(ev["unshelve"]["id"], ev["unshelve"]["by"], at)
        elif "comment" in ev:
            c = ev["comment"]
            out.events += mgr.comment(c["id"], c["by"], c["text"], at)
        elif "out_of_service" in ev:
            o = ev["out_of_service"]
            out.events += mgr.set_in_service(o["id"], False, o["by"], o.get("reason", ""), at)
        elif "in_service" in ev:
            o = ev["in_service"]
            out.events += mgr.set_in_service(o["id"], True, o["by"], o.get("reason", ""), at)
        else:
            raise ValueError(f"unknown input event {ev!r}")
    out.extend(core.flush(max(end, core.max_seen_ms)))
    return out.events


def project(events: list[AlarmEvent]) -> list[dict[str, Any]]:
    """The fields a golden case compares."""
    rows = []
    for e in events:
        row: dict[str, Any] = {k: getattr(e, k) for k in CASE_KEYS}
        row["state"] = str(row["state"])
        if e.by:
            row["by"] = e.by
        if e.parent:
            row["parent"] = e.parent
        if e.outage is not None:
            row["outage"] = e.outage.model_dump(mode="json", exclude_none=True)
        rows.append(row)
    return rows


def run_case(folder: Path) -> list[dict[str, Any]]:
    """Run one golden case folder; the projected alarm events it produces."""
    loaded = load_case_field(folder)
    core = Core(loaded)
    events = yaml.safe_load((folder / "input.yaml").read_text()) or []
    return project(run_events(core, events))
