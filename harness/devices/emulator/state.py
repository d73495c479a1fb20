"""The phone's changing hardware state, kept in sysfs-like files under ``<root>/sys``.

A first-order thermal model: one die temperature T relaxes towards an equilibrium
``ambient + idle_rise + load_rise * (1 - 0.4**busy)`` (``busy`` = shell commands running) with
time constant ``tau``. Each thermal zone reads ``ambient + lag * (T - ambient) + offset``
(offset scaled in as the phone warms), so ``thermal_zone0`` (lag 1, offset 0) is T itself and
the battery trails behind. Above the profile's throttle temperature the cpufreq ceiling drops.
The battery charges while idle and drains under load.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from .profiles import DeviceProfile

_IDLE_FRACTION = 0.15  # idle cores sit this far up their frequency range


def _cpu_list(n: int) -> str:
    return "0" if n == 1 else f"0-{n - 1}"


class PhoneState:
    """Thermal, battery and CPU-frequency state of one emulated phone."""

    def __init__(
        self, profile: DeviceProfile, sys_root: Path, *, time_constant_s: float = 30.0
    ) -> None:
        if time_constant_s <= 0:
            raise ValueError("time_constant_s must be positive")
        self.profile = profile
        self.sys_root = sys_root
        self.tau_s = time_constant_s
        self.ambient_c = profile.ambient_c
        self.die_c = profile.ambient_c + profile.idle_rise_c
        self.battery_pct = float(profile.battery_capacity)
        self.busy = 0
        self._lock = threading.Lock()
        self._written: dict[Path, str] = {}

    # -- model ---------------------------------------------------------------------------

    def equilibrium_c(self) -> float:
        p = self.profile
        return self.ambient_c + p.idle_rise_c + p.load_rise_c * (1.0 - 0.4**self.busy)

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass, then rewrite the files."""
        with self._lock:
            eq = self.equilibrium_c()
            self.die_c += (eq - self.die_c) * (1.0 - math.exp(-dt_s / self.tau_s))
            if self.busy:
                self.battery_pct -= dt_s / 60.0 * (1.0 - 0.4**self.busy)
            else:
                self.battery_pct += dt_s / 90.0
            self.battery_pct = min(100.0, max(1.0, self.battery_pct))
        self.write()

    def set_temperature(self, celsius: float) -> None:
        """Set the die temperature (what thermal_zone0 reads) and rewrite the files now."""
        with self._lock:
            self.die_c = float(celsius)
        self.write()

    def zone_c(self, index: int) -> float:
        zone = self.profile.thermal_zones[index]
        rise = self.die_c - self.ambient_c
        scale = min(1.0, max(0.0, rise / 30.0))
        return self.ambient_c + zone.lag * rise + zone.offset_c * scale

    def cpu_khz(self) -> list[tuple[int, int, int, int]]:
        """Per CPU: (current, scaling_max, cpuinfo_min, cpuinfo_max) in kHz."""
        out: list[tuple[int, int, int, int]] = []
        over = max(0.0, self.die_c - self.profile.throttle_c)
        for cluster in self.profile.clusters:
            ceiling = cluster.max_khz * max(0.5, 1.0 - 0.03 * over)
            ceiling_khz = max(cluster.min_khz, int(ceiling // 100 * 100))
            idle = cluster.min_khz + _IDLE_FRACTION * (cluster.max_khz - cluster.min_khz)
            cur = ceiling_khz if self.busy else min(ceiling_khz, int(idle // 100 * 100))
            out += [(cur, ceiling_khz, cluster.min_khz, cluster.max_khz)] * cluster.count
        return out

    def battery_status(self) -> str:
        if self.battery_pct >= 99.5:
            return "Full"
        return "Discharging" if self.busy else "Charging"

    def snapshot(self) -> dict[str, Any]:
        """What the files say, as numbers (for the emulator's control surface and logs)."""
        with self._lock:
            return {
                "die_c": round(self.die_c, 2),
                "zones_c": {
                    z.type: round(self.zone_c(i), 2)
                    for i, z in enumerate(self.profile.thermal_zones)
                },
                "battery_pct": int(self.battery_pct),
                "battery_status": self.battery_status(),
                "busy": self.busy,
                "cpu_cur_khz": [c[0] for c in self.cpu_khz()],
            }

    # -- files -----------------------------------------------------------------------------

    def materialise(self) -> None:
        """(Re)create the sysfs tree from the profile and write every file."""
        if self.sys_root.exists():
            shutil.rmtree(self.sys_root)
        self.sys_root.mkdir(parents=True)
        self._written.clear()
        cpu_root = self.sys_root / "devices/system/cpu"
        n = self.profile.cpu_count
        # Cores beyond the host's count show offline, like hot-unplugged cores on a phone, so
        # programs size their thread pools to the cores that really run them.
        host_cpus = min(n, os.cpu_count() or 1)
        self._put(cpu_root / "possible", _cpu_list(n))
        self._put(cpu_root / "present", _cpu_list(n))
        self._put(cpu_root / "online", _cpu_list(host_cpus))
        self._put(cpu_root / "offline", f"{host_cpus}-{n - 1}" if host_cpus < n else "")
        index = 0
        for cluster in self.profile.clusters:
            first = index
            for _ in range(cluster.count):
                freq = cpu_root / f"cpu{index}/cpufreq"
                self._put(cpu_root / f"cpu{index}/online", "1" if index < host_cpus else "0")
                self._put(freq / "scaling_governor", cluster.governor)
                self._put(freq / "scaling_available_governors", "schedutil performance powersave")
                self._put(freq / "scaling_min_freq", str(cluster.min_khz))
                self._put(
                    freq / "related_cpus",
                    " ".join(str(c) for c in range(first, first + cluster.count)),
                )
                index += 1
        for i, zone in enumerate(self.profile.thermal_zones):
            zdir = self.sys_root / f"class/thermal/thermal_zone{i}"
            self._put(zdir / "type", zone.type)
            self._put(zdir / "mode", "enabled")
        bat = self.sys_root / "class/power_supply/battery"
        self._put(bat / "type", "Battery")
        self._put(bat / "present", "1")
        self._put(bat / "health", "Good")
        self._put(bat / "technology", self.profile.battery_technology)
        self.write()

    def write(self) -> None:
        """Write the files whose content changed."""
        with self._lock:
            cpu_root = self.sys_root / "devices/system/cpu"
            for i, (cur, ceiling, lo, hi) in enumerate(self.cpu_khz()):
                freq = cpu_root / f"cpu{i}/cpufreq"
                self._put(freq / "scaling_cur_freq", str(cur))
                self._put(freq / "scaling_max_freq", str(ceiling))
                self._put(freq / "cpuinfo_min_freq", str(lo))
                self._put(freq / "cpuinfo_max_freq", str(hi))
            for i in range(len(self.profile.thermal_zones)):
                zdir = self.sys_root / f"class/thermal/thermal_zone{i}"
                self._put(zdir / "temp", str(round(self.zone_c(i) * 1000)))
            battery_index = next(
                (i for i, z in enumerate(self.profile.thermal_zones) if z.type == "battery"), 0
            )
            bat = self.sys_root / "class/power_supply/battery"
            pct = int(self.battery_pct)
            self._put(bat / "capacity", str(pct))
            self._put(bat / "temp", str(round(self.zone_c(battery_index) * 10)))
            self._put(bat / "status", self.battery_status())
            self._put(bat / "voltage_now", str(3_500_000 + 7_000 * pct))

    def _put(self, path: Path, value: str) -> None:
        text = value + "\n"
        if self._written.get(path) == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readers (cat in a shell) must never see a half-written file: write aside, rename.
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_text(text)
        os.replace(tmp, path)
        self._written[path] = text
