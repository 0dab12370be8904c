"""``aquavolt sim generate``: a valid field file of N customers for scale tests.

Zones of about 1,000 connections (15 m of main per connection), a pumping station per pair
of pumps filling a tank, substations of three feeders with 250/400 kVA transformers of about
60 customers each, and metering gateways of at most 247 customers (two Modbus TCP
concentrators each: water and electricity, unit ids 1..247). Ports count up from
``--base-port`` (default 20000).
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Any

import yaml

PER_GATEWAY = 247
PER_TRANSFORMER = 60
PER_ZONE = 1000


def generate(customers: int, pumps: int = 2, substations: int = 1, seed: int = 1,
             base_port: int = 20000) -> dict[str, Any]:
    rnd = random.Random(seed)
    ports = iter(range(base_port, base_port + 10000))
    lat0, lon0 = 33.0, -6.8
    n_zones = max(1, math.ceil(customers / PER_ZONE))
    n_tx = max(1, math.ceil(customers / PER_TRANSFORMER))
    gateways: list[dict[str, Any]] = []
    sites = [{"id": "town", "name": "Town distribution"}]
    zones = [{"id": f"zone-{z + 1}", "site": "town", "population": 0, "connections": 0,
              "mains_length_km": 0.0, "inlet_meters": [f"inlet-zone-{z + 1}"],
              "pressure_sensors": [f"pressure-zone-{z + 1}"]} for z in range(n_zones)]
    # pumping: one gateway per station (two pumps, one tank)
    tanks, pump_list = [], []
    plant_devices: list[dict[str, Any]] = []
    n_stations = max(1, math.ceil(pumps / 2)) if pumps else 0
    for st in range(max(n_stations, 1)):
        sites.append({"id": f"plant-{st + 1}", "name": f"Pumping station {st + 1}"})
        devs: list[dict[str, Any]] = []
        if st < n_stations:
            zone = zones[st % n_zones]["id"]
            tank = f"tank-{st + 1}"
            devs.append({"id": f"{tank}-level", "profile": "av_level1", "bus": "plc", "unit_id": 1})
            tanks.append({"id": tank, "zone": zone, "device": f"{tank}-level", "area_m2": 400.0,
                          "height_m": 6.0, "low_level_m": 1.0, "high_level_m": 5.5, "initial_level_m": 3.5})
            for k in range(min(2, pumps - 2 * st)):
                pid = f"pump-{2 * st + k + 1}"
                devs.append({"id": pid, "profile": "av_pump1", "bus": "plc", "unit_id": 2 + k})
                pump_list.append({"id": pid, "zone": zone, "device": pid, "tank": tank,
                                  "rated_flow_lps": 60.0, "shutoff_head_m": 75.0, "rated_head_m": 55.0,
                                  "rated_current_a": 90.0})
        plant_devices = devs
        if st == 0:  # zone inlets and pressure loggers on the first station's PLC
            unit = 10
            for z in zones:
                plant_devices.append({"id": z["inlet_meters"][0], "profile": "av_flow1", "bus": "plc",
                                      "unit_id": unit})
                plant_devices.append({"id": z["pressure_sensors"][0], "profile": "av_pressure1",
                                      "bus": "plc", "unit_id": unit + 1})
                unit += 2
        if plant_devices:
            gateways.append({"id": f"gw-plant-{st + 1}", "site": f"plant-{st + 1}",
                             "poll_intervals_s": {"default": 30.0, "slow": 600.0},
                             "buses": [{"kind": "modbus_tcp", "id": "plc", "port": next(ports)}],
                             "devices": plant_devices})
    # electricity
    subs = []
    tx_ids: list[str] = []
    n_sub = max(1, substations)
    per_sub = math.ceil(n_tx / n_sub)
    for s in range(n_sub):
        sid = f"ss{s + 1}"
        sites.append({"id": f"substation-{s + 1}", "name": f"Substation {s + 1}"})
        devs = [{"id": f"{sid}-transformer", "profile": "av_rtu_transformer", "bus": "rtu",
                 "node_prefix": f"SS{s + 1}.TR1"}]
        feeders = []
        n_here = max(0, min(per_sub, n_tx - s * per_sub))
        for fi in range(3):
            fid = f"{sid}-feeder-{fi + 1}"
            devs.append({"id": fid, "profile": "av_rtu_feeder", "bus": "rtu",
                         "node_prefix": f"SS{s + 1}.F{fi + 1}"})
            txs = []
            for k in range(fi, n_here, 3):
                tid = f"tx-{s + 1}-{k + 1}"
                tx_ids.append(tid)
                # one meter bus per feeder (and per 247 meters): unit ids stay unique per bus
                bus = f"tx-meters-f{fi + 1}-{k // 3 // PER_GATEWAY + 1}"
                devs.append({"id": f"{tid}-meter", "profile": "eastron_sdm630", "bus": bus,
                             "unit_id": (k // 3) % PER_GATEWAY + 1})
                txs.append({"id": tid, "rating_kva": 400.0 if k % 2 else 250.0, "device": f"{tid}-meter"})
            feeders.append({"id": fid, "device": fid, "length_km": round(rnd.uniform(3, 9), 1),
                            "resistance_ohm_per_km": 0.25, "transformers": txs})
        buses: list[dict[str, Any]] = [{"kind": "opcua", "id": "rtu",
                                        "endpoint": f"opc.tcp://127.0.0.1:{next(ports)}/aquavolt/rtu",
                                        "security_policy": "Basic256Sha256",
                                        "security_mode": "SignAndEncrypt",
                                        "trust_on_first_use": True,
                                        "username": "edge", "password": "edge-scale-password"}]
        for b in sorted({d["bus"] for d in devs if d["bus"] != "rtu"}):
            buses.append({"kind": "modbus_tcp", "id": b, "port": next(ports)})
        gateways.append({"id": f"gw-{sid}", "site": f"substation-{s + 1}",
                         "poll_intervals_s": {"default": 30.0, "slow": 600.0}, "buses": buses,
                         "devices": devs})
        subs.append({"id": sid, "site": f"substation-{s + 1}", "device": f"{sid}-transformer",
                     "rating_kva": 20000.0, "feeders": feeders})
    # customers and metering gateways
    cust = []
    for g in range(math.ceil(customers / PER_GATEWAY)):
        gid = f"gw-meters-{g + 1}"
        devs = []
        for u in range(PER_GATEWAY):
            i = g * PER_GATEWAY + u
            if i >= customers:
                break
            cid = f"c{i + 1:05d}"
            r = rnd.random()
            ctype = "residential" if r < 0.88 else "commercial" if r < 0.98 else "industrial"
            occ = rnd.randint(1, 6) if ctype == "residential" else 0
            z = zones[i * n_zones // customers]
            z["population"] += occ
            z["connections"] += 1
            z["mains_length_km"] = round(z["mains_length_km"] + 0.015, 3)
            c: dict[str, Any] = {"id": cid, "type": ctype, "water_meter": f"wm-{cid}", "zone": z["id"],
                                 "electricity_meter": f"em-{cid}", "transformer": tx_ids[i % len(tx_ids)],
                                 "occupants": occ,
                                 "latitude_deg": round(lat0 + rnd.uniform(-0.05, 0.05), 5),
                                 "longitude_deg": round(lon0 + rnd.uniform(-0.05, 0.05), 5)}
            if ctype == "industrial" and rnd.random() < 0.5:
                c["continuous_flow_expected"] = True
            if ctype == "commercial" and rnd.random() < 0.1:
                c["night_user"] = True  # a hotel: water at every hour, as its register says
                c["continuous_flow_expected"] = True
            cust.append(c)
            devs.append({"id": f"wm-{cid}", "profile": "av_wm1", "bus": "water", "unit_id": u + 1})
            devs.append({"id": f"em-{cid}", "profile": "av_em1", "bus": "elec", "unit_id": u + 1})
        gateways.append({"id": gid, "site": "town", "poll_intervals_s": {"default": 900.0, "slow": 3600.0},
                         "buses": [{"kind": "modbus_tcp", "id": "water", "port": next(ports)},
                                   {"kind": "modbus_tcp", "id": "elec", "port": next(ports)}],
                         "devices": devs})
    for z in zones:
        z["mains_length_km"] = max(z["mains_length_km"], 0.5)
    return {"version": 1, "id": f"scale-{customers}", "name": f"Generated field of {customers} customers",
            "timezone": "Africa/Casablanca", "sites": sites, "gateways": gateways,
            "water": {"zones": zones, "tanks": tanks, "pumps": pump_list},
            "electricity": {"substations": subs}, "customers": cust}


def generate_cli(args: argparse.Namespace) -> int:
    data = generate(args.customers, args.pumps, args.substations, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    n_dev = sum(len(g["devices"]) for g in data["gateways"])
    print(f"aquavolt sim generate: {out}: {len(data['customers'])} customers, "
          f"{len(data['gateways'])} gateways, {n_dev} devices")
    return 0
