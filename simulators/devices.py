"""What each device of the field shows: engineering values by point name, and whether it
answers at all (power, communication, exception and slow-device faults).

A device's role comes from the field (a customer's water meter, a zone inlet, a pump
controller, a transformer's LV meter, a feeder bay...). Each role computes a dictionary of
quantities named like profile points; the device's profile picks the ones it has, and a
point the role does not know reads 0 (or false). Sensor faults apply last.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from aquavolt.codec import Value
from aquavolt.faults import SENSOR_KINDS, FaultKind
from aquavolt.simulators.demand import REFERENCE
from aquavolt.simulators.faults import Fault
from aquavolt.simulators.model import G_BAR_PER_M, PF, TAN_PHI, FieldModel, Snapshot

DN150_AREA_M2 = math.pi * 0.075**2
LAST_GASP_DECLARATION_S = 30.0  # zero voltage before the meter declares the outage (domain.md)


@dataclass(frozen=True)
class Answer:
    """How a device answers now: ``ok``, ``silent`` (no reply), ``exception`` or ``slow``."""

    mode: str = "ok"
    code: int = 0
    delay_s: float = 0.0


OK = Answer()


def noise(seed: int, tick: int, key: str) -> float:
    """Deterministic noise in [-1.73, 1.73] (unit variance), from (seed, tick, key)."""
    h = zlib.crc32(f"{seed}:{tick}:{key}".encode())
    return (h / 0xFFFFFFFF * 2 - 1) * 1.7320508


class Devices:
    def __init__(self, model: FieldModel) -> None:
        self.m = model
        f = model.field
        self.role: dict[str, tuple[str, Any]] = {}
        for d in f.devices:
            if d in model.wm_index:
                self.role[d] = ("water_meter", model.wm_index[d])
            elif d in model.em_index:
                self.role[d] = ("elec_meter", model.em_index[d])
        for z in f.water.zones:
            for d in z.inlet_meters:
                self.role[d] = ("inlet", (model.zone_index[z.id], len(z.inlet_meters)))
            for d in z.pressure_sensors:
                self.role[d] = ("pressure", model.zone_index[z.id])
        for tank in f.water.tanks:
            self.role[tank.device] = ("tank", tank.id)
        for p in f.water.pumps:
            self.role[p.device] = ("pump", p.id)
        for tid, (_s, _fd, tx) in f.transformers.items():
            if tx.device:
                self.role[tx.device] = ("tx_meter", model.tx_index[tid])
        for fid, (_s, fd) in f.feeders.items():
            if fd.device:
                self.role[fd.device] = ("feeder", model.feeder_index[fid])
        for s in f.electricity.substations:
            if s.device:
                self.role[s.device] = ("substation", s.id)
        self._cache: dict[str, dict[str, Value]] = {}
        self._cache_tick = -1
        self._stuck: dict[str, Value] = {}
        self._drift0: dict[str, float] = {}
        model.on_tick.append(self._capture)
        rng_seed = model.seed
        self.tx_energy0 = {i: 1e5 + (zlib.crc32(f"{rng_seed}:tx{i}".encode()) % 900000)
                           for i in range(len(model.tx_ids))}
        self.feeder_energy0 = {i: 1e6 + (zlib.crc32(f"{rng_seed}:f{i}".encode()) % 9000000)
                               for i in range(len(model.feeder_ids))}

    # ------------------------------------------------------------ answering
    def answer(self, device: str, t: float) -> Answer:
        faults = self.m.faults
        if faults.active(t, FaultKind.COMM_LOSS, device):
            return Answer("silent")
        role, idx = self.role.get(device, ("", None))
        if role == "elec_meter":
            out = self._outage(idx, t)
            if out is not None and t >= out.start + self._window(device, out):
                return Answer("silent")
        for fl in faults.active(t, FaultKind.MODBUS_EXCEPTION, device):
            return Answer("exception", code=int(fl.params["code"]))
        for fl in faults.active(t, FaultKind.SLOW_DEVICE, device):
            return Answer("slow", delay_s=float(fl.params["delay_s"]))
        return OK

    def _window(self, device: str, fault: Fault) -> float:
        prof = self.m.loaded.profile_of(device)
        if getattr(prof, "last_gasp_point", None) is None:
            return 0.0
        return float(fault.params.get("last_gasp_window_s", 900.0))

    def _outage(self, cust: int, t: float, ended: bool = False) -> Fault | None:
        """The outage fault cutting this customer at t (or, ``ended``, the last one that ended)."""
        m = self.m
        tx = int(m.cust_tx[cust])
        if tx >= len(m.tx_ids):
            return None
        best = None
        for fl in m.faults.of(FaultKind.TRANSFORMER_OUTAGE, FaultKind.FEEDER_OUTAGE):
            hit = (m.tx_index[fl.target] == tx if fl.kind is FaultKind.TRANSFORMER_OUTAGE
                   else m.feeder_index[fl.target] == int(m.tx_feeder[tx]))
            if hit and (fl.end <= t if ended else fl.active(t)) and (best is None or fl.start > best.start):
                best = fl
        return best

    def _capture(self) -> None:
        """A stuck sensor freezes on its value at the first tick of the fault."""
        snap = self.m.snap
        assert snap is not None
        for fl in self.m.faults.of(FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT):
            if fl.id in self._stuck or fl.id in self._drift0 or not fl.active(snap.t):
                continue
            role, idx = self.role.get(fl.target, ("", None))
            raw = getattr(self, f"_{role}")(snap, idx, fl.target) if role else {}
            v = raw.get(fl.params["point"], 0)
            if fl.kind is FaultKind.SENSOR_STUCK:
                self._stuck[fl.id] = v
            elif not isinstance(v, bool | str):
                self._drift0[fl.id] = float(v)

    # ------------------------------------------------------------ values
    def values(self, device: str) -> dict[str, Value]:
        snap = self.m.snap
        if snap is None:
            raise RuntimeError("model not advanced")
        if self._cache_tick != snap.tick:
            self._cache.clear()
            self._cache_tick = snap.tick
        hit = self._cache.get(device)
        if hit is not None:
            return hit
        role, idx = self.role.get(device, ("", None))
        raw: dict[str, Value] = getattr(self, f"_{role}")(snap, idx, device) if role else {}
        prof = self.m.loaded.profile_of(device)
        out: dict[str, Value] = {}
        for p in prof.points:
            v = raw.get(p.name)
            if v is None:
                ptype = str(getattr(p, "type", ""))
                v = False if ptype == "bool" else "" if ptype == "string" else 0
            out[p.name] = v
        self._sensor_faults(device, snap, out)
        self._cache[device] = out
        return out

    def _sensor_faults(self, device: str, snap: Snapshot, out: dict[str, Value]) -> None:
        for fl in self.m.faults.of(*SENSOR_KINDS):
            if fl.target != device or not fl.active(snap.t):
                continue
            point = fl.params["point"]
            v = out.get(point)
            if isinstance(v, bool | str) or v is None:
                continue
            if fl.kind is FaultKind.SENSOR_STUCK:
                out[point] = self._stuck.setdefault(fl.id, v)
            elif fl.kind is FaultKind.SENSOR_SPIKE:
                mag = fl.params.get("magnitude")
                out[point] = v + (mag if mag is not None else 3 * max(abs(v), 1.0))
            else:
                v0 = self._drift0.setdefault(fl.id, float(v))
                rate = fl.params.get("rate_per_h")
                rate = rate if rate is not None else 0.05 * max(abs(v0), 1.0)
                out[point] = v + rate * (snap.t - fl.start) / 3600

    def _n(self, snap: Snapshot, key: str) -> float:
        return noise(self.m.seed, snap.tick, key)

    def _water_meter(self, snap: Snapshot, i: int, dev: str) -> dict[str, Value]:
        m = self.m
        c = snap.customers
        years = (snap.t - REFERENCE) / (365.25 * 86400)
        battery = max(100 - 6 * years - (i % 11), 5)
        leak24 = any(fl.target == m.field.customers[i].id and snap.t - fl.start >= 86400
                     for fl in m.faults.active(snap.t, FaultKind.CUSTOMER_LEAK))
        flags = (1 if leak24 else 0) | (32 if battery < 20 else 0)
        return {"flow_lph": float(c.flow_lph[i]) * 0.98,
                "volume_m3": float(m.demand.water_meter_m3(c.water_l, i)),
                "reverse_volume_m3": 0.001 * (i % 13), "battery_pct": round(battery),
                "temperature_c": round(17 + 5 * math.cos(2 * math.pi * (years % 1 - 0.55)), 1),
                "alarm_flags": flags}

    def _elec_meter(self, snap: Snapshot, i: int, dev: str) -> dict[str, Value]:
        m = self.m
        c = snap.customers
        tx, ph = int(m.cust_tx[i]), int(m.cust_phase[i])
        p = float(c.power_w[i])
        dead = bool(snap.dead[i])
        v_src = float(snap.elec.v_phase_v[tx, ph]) if tx < len(m.tx_ids) else 230.0
        current = p / (max(v_src, 1.0) * PF) if not dead else 0.0
        volt = 0.0 if dead else v_src - current * 0.25 + 0.3 * self._n(snap, dev)
        out = self._outage(i, snap.t)
        gasp = out is not None and snap.t >= out.start + LAST_GASP_DECLARATION_S
        back = self._outage(i, snap.t, ended=True)
        restored = (out is None and back is not None
                    and snap.t < back.end + float(back.params.get("last_gasp_window_s", 900.0)))
        return {"voltage_v": volt, "current_a": current, "power_w": p,
                "reactive_power_var": p * TAN_PHI,
                "energy_kwh": float(m.demand.energy_meter_kwh(c.energy_kwh, i)),
                "frequency_hz": 0.0 if dead else 50.0 + 0.01 * self._n(snap, "hz"),
                "status_flags": (1 if gasp else 0) | (2 if restored else 0),
                "last_gasp": gasp, "power_restored": restored,
                "serial_number": f"AV{zlib.crc32(dev.encode()) % 10**10:010d}"}

    def _inlet(self, snap: Snapshot, idx: tuple[int, int], dev: str) -> dict[str, Value]:
        z, n = idx
        q = float(snap.zone_flow_lps[z]) / n * (1 + 0.005 * self._n(snap, dev))
        return {"flow_lps": q, "volume_m3": float(snap.zone_volume_m3[z]) / n,
                "pressure_bar": (float(snap.zone_pressure_m[z]) + 8.0) * G_BAR_PER_M
                + 0.003 * self._n(snap, dev + "p"),
                "velocity_mps": q / 1000 / DN150_AREA_M2, "status_flags": 4 if q < 0 else 0}

    def _pressure(self, snap: Snapshot, z: int, dev: str) -> dict[str, Value]:
        return {"pressure_bar": float(snap.zone_pressure_m[z]) * G_BAR_PER_M + 0.004 * self._n(snap, dev),
                "battery_pct": 80}

    def _tank(self, snap: Snapshot, tank: str, dev: str) -> dict[str, Value]:
        years = (snap.t - REFERENCE) / (365.25 * 86400)
        return {"level_m": self.m.levels[tank] + 0.002 * self._n(snap, dev),
                "temperature_c": round(16 + 4 * math.cos(2 * math.pi * (years % 1 - 0.55)), 1),
                "sensor_ok": True}

    def _pump(self, snap: Snapshot, pump: str, dev: str) -> dict[str, Value]:
        st = self.m.pumps[pump]
        return {"running": st.running, "fault": st.fault_code != 0, "remote_mode": True,
                "run_command": st.enabled, "speed_pct": st.speed_pct if st.running else 0.0,
                "motor_current_a": st.current_a, "discharge_pressure_bar": st.head_m * G_BAR_PER_M,
                "flow_lps": st.flow_lps, "fault_code": st.fault_code,
                "run_hours_h": int(st.run_hours_h), "starts": st.starts,
                "speed_setpoint_pct": st.speed_pct}

    def _tx_meter(self, snap: Snapshot, k: int, dev: str) -> dict[str, Value]:
        e = snap.elec
        out: dict[str, Value] = {}
        q_tot = 0.0
        for ph in range(3):
            n = ph + 1
            p = float(e.p_phase_w[k, ph])
            out[f"voltage_l{n}_v"] = float(e.v_phase_v[k, ph])
            out[f"current_l{n}_a"] = float(e.i_phase_a[k, ph])
            out[f"power_l{n}_w"] = p
            out[f"power_factor_l{n}"] = PF if p > 0 else 1.0
            q_tot += p * TAN_PHI
        p_tot = float(e.p_phase_w[k].sum())
        energy = self.tx_energy0[k] + float(e.energy_tx_kwh[k])
        out.update({"total_power_w": p_tot, "total_apparent_power_va": math.hypot(p_tot, q_tot),
                    "total_reactive_power_var": q_tot, "total_power_factor": PF if p_tot > 0 else 1.0,
                    "frequency_hz": 0.0 if e.dead_tx[k] else 50.0 + 0.01 * self._n(snap, "hz"),
                    "import_energy_kwh": energy, "export_energy_kwh": 0.0, "total_energy_kwh": energy,
                    "voltage_v": out["voltage_l1_v"], "current_a": out["current_l1_a"],
                    "power_w": p_tot, "energy_kwh": energy})
        return out

    def _feeder(self, snap: Snapshot, fi: int, dev: str) -> dict[str, Value]:
        e = snap.elec
        closed = not bool(e.feeder_open[fi])
        v = e.busbar_v / math.sqrt(3) if closed else 0.0
        i = float(e.i_feeder_a[fi])
        out: dict[str, Value] = {}
        for n, u in ((1, 1.0), (2, 0.997), (3, 1.002)):
            out[f"voltage_l{n}_v"] = v * u
            out[f"current_l{n}_a"] = i * (2 - u)
        p = float(e.p_feeder_w[fi]) / 1000 if closed else 0.0
        out.update({"active_power_kw": p, "reactive_power_kvar": p * TAN_PHI, "breaker_closed": closed,
                    "energy_kwh": self.feeder_energy0[fi] + float(e.energy_feeder_kwh[fi])})
        return out

    def _substation(self, snap: Snapshot, sid: str, dev: str) -> dict[str, Value]:
        e = snap.elec
        return {"oil_temperature_c": e.oil_c, "winding_temperature_c": e.winding_c,
                "load_kva": e.load_kva, "tap_position": round((11000 - e.busbar_v) / 110) + 9,
                "busbar_voltage_v": e.busbar_v, "door_open": False}
