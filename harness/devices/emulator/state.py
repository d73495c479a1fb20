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
import threading
from pathlib import Path
from typing import TypedDict

from . import fsat
from .profiles import DeviceProfile


class HardwareState(TypedDict):
    """What the emulated phone's sysfs files say, as numbers."""

    die_c: float
    zones_c: dict[str, float]
    battery_pct: int
    battery_status: str
    busy: int  # shell commands running
    cpu_cur_khz: list[int]


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
        self._written: dict[str, str] = {}  # path under sys_root -> what it holds

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

    def snapshot(self) -> HardwareState:
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
        parent_fd = fsat.open_root(self.sys_root.parent)
        try:
            fsat.remove_tree(parent_fd, self.sys_root.name)
            os.mkdir(self.sys_root.name, 0o755, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        self._written.clear()
        files: list[tuple[str, str]] = []
        cpu = "devices/system/cpu"
        n = self.profile.cpu_count
        # Cores beyond the host's count show offline, like hot-unplugged cores on a phone, so
        # programs size their thread pools to the cores that really run them.
        host_cpus = min(n, os.cpu_count() or 1)
        files += [
            (f"{cpu}/possible", _cpu_list(n)),
            (f"{cpu}/present", _cpu_list(n)),
            (f"{cpu}/online", _cpu_list(host_cpus)),
            (f"{cpu}/offline", f"{host_cpus}-{n - 1}" if host_cpus < n else ""),
        ]
        index = 0
        for cluster in self.profile.clusters:
            first = index
            for _ in range(cluster.count):
                freq = f"{cpu}/cpu{index}/cpufreq"
                related = " ".join(str(c) for c in range(first, first + cluster.count))
                files += [
                    (f"{cpu}/cpu{index}/online", "1" if index < host_cpus else "0"),
                    (f"{freq}/scaling_governor", cluster.governor),
                    (f"{freq}/scaling_available_governors", "schedutil performance powersave"),
                    (f"{freq}/scaling_min_freq", str(cluster.min_khz)),
                    (f"{freq}/related_cpus", related),
                ]
                index += 1
        for i, zone in enumerate(self.profile.thermal_zones):
            zdir = f"class/thermal/thermal_zone{i}"
            files += [(f"{zdir}/type", zone.type), (f"{zdir}/mode", "enabled")]
        bat = "class/power_supply/battery"
        files += [
            (f"{bat}/type", "Battery"),
            (f"{bat}/present", "1"),
            (f"{bat}/health", "Good"),
            (f"{bat}/technology", self.profile.battery_technology),
        ]
        with self._lock:
            self._put_all(files)
        self.write()

    def write(self) -> None:
        """Write the files whose content changed."""
        with self._lock:
            files: list[tuple[str, str]] = []
            cpu = "devices/system/cpu"
            for i, (cur, ceiling, lo, hi) in enumerate(self.cpu_khz()):
                freq = f"{cpu}/cpu{i}/cpufreq"
                files += [
                    (f"{freq}/scaling_cur_freq", str(cur)),
                    (f"{freq}/scaling_max_freq", str(ceiling)),
                    (f"{freq}/cpuinfo_min_freq", str(lo)),
                    (f"{freq}/cpuinfo_max_freq", str(hi)),
                ]
            for i in range(len(self.profile.thermal_zones)):
                temp = str(round(self.zone_c(i) * 1000))
                files.append((f"class/thermal/thermal_zone{i}/temp", temp))
            battery_index = next(
                (i for i, z in enumerate(self.profile.thermal_zones) if z.type == "battery"), 0
            )
            bat = "class/power_supply/battery"
            pct = int(self.battery_pct)
            files += [
                (f"{bat}/capacity", str(pct)),
                (f"{bat}/temp", str(round(self.zone_c(battery_index) * 10))),
                (f"{bat}/status", self.battery_status()),
                (f"{bat}/voltage_now", str(3_500_000 + 7_000 * pct)),
            ]
            self._put_all(files)

    def _put_all(self, files: list[tuple[str, str]]) -> None:
        """Write ``(path under sys_root, value)`` pairs whose content changed.

        Every directory is reached from ``sys_root``'s descriptor one component at a time,
        never through a symlink (one found is replaced by the directory it stands in for), and
        every file is written aside and renamed over its name, so a link planted in the tree
        can never make the emulator write anywhere else (see :mod:`.fsat`)."""
        changed = [(path, value + "\n") for path, value in files]
        changed = [(path, text) for path, text in changed if self._written.get(path) != text]
        if not changed:
            return
        parent_fd = fsat.open_root(self.sys_root.parent)
        try:
            root_fd = fsat.open_dir(parent_fd, self.sys_root.name)
        finally:
            os.close(parent_fd)
        dir_fds: dict[str, int] = {}
        try:
            for path, text in changed:
                directory, _, name = path.rpartition("/")
                if directory not in dir_fds:
                    dir_fds[directory] = fsat.open_dir(root_fd, directory)
                fsat.write_file(dir_fds[directory], name, text.encode())
                self._written[path] = text
        finally:
            for fd in dir_fds.values():
                os.close(fd)
            os.close(root_fd)
