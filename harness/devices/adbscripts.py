"""The fixed scripts edgefarm runs on a phone's shell, and the parsers of what they print:
the state snapshot (thermal zones, battery, CPU frequencies) and the reset of leftover runs.

Never built from user input; each is one round trip.
"""

from __future__ import annotations

import posixpath

from harness.devices.adbshell import WORK_ROOT
from harness.devices.records import BatteryState, CpuState, StateSnapshot

# One round trip for the whole state snapshot: thermal zones, battery, CPU frequencies.
# Shell builtins only (read, set, echo): a fork per file read made one snapshot cost 150-600 ms
# on an emulated phone, twice per run, inside the lease.
STATE_SCRIPT = r"""
o=$IFS
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  n=; t=; read -r n < "$z/type"; read -r t < "$z/temp"
  IFS=$o; set -f; set -- $n; set +f; IFS=_; echo "T $* $t"
done 2>/dev/null
IFS=$o
b=/sys/class/power_supply/battery
if [ -r "$b/capacity" ]; then
  l=; t=; s=; read -r l < $b/capacity; read -r t < $b/temp; read -r s < $b/status
  echo "B $l $t $s"
fi 2>/dev/null
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  f=$c/cpufreq
  [ -r "$f/scaling_cur_freq" ] || continue
  u=; g=; m=; read -r u < $f/scaling_cur_freq; read -r g < $f/scaling_governor
  read -r m < $f/cpuinfo_max_freq; echo "C ${c##*/} $u $g $m"
done 2>/dev/null
true
"""


# End the runners of interrupted runs (each wrote its pid to runner.pid) and remove every run
# directory; prints "killed PID" for each runner ended.
RESET_SCRIPT = (
    f"cd {posixpath.join(WORK_ROOT, 'runs')} 2>/dev/null || exit 0; "
    'for f in */runner.pid; do [ -f "$f" ] || continue; read -r p < "$f"; '
    'kill -9 "$p" 2>/dev/null && echo "killed $p"; done; '
    f"cd / && rm -rf {posixpath.join(WORK_ROOT, 'runs')}"
)
# A line between a command's output and the state snapshot printed after it, and the prefix of
# each marker file a preflight found present.
STATE_MARKER = "EDGEFARM-STATE-FOLLOWS"
PRESENT_MARKER = "EDGEFARM-PRESENT "


def killed_pids(output: str) -> list[int]:
    """The pids :data:`RESET_SCRIPT` says it ended."""
    return [
        int(w)
        for ln in output.splitlines()
        if ln.startswith("killed ")
        for w in ln.split()[1:2]
        if w.isdigit()
    ]


def parse_state(text: str) -> StateSnapshot:
    """The snapshot :data:`STATE_SCRIPT` printed."""
    thermal: dict[str, float] = {}
    cpus: dict[str, CpuState] = {}
    battery: BatteryState = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "T" and parts[2].lstrip("-").isdigit():
            value = int(parts[2])
            # Most zones report millidegrees; a few report degrees.
            thermal[parts[1]] = value / 1000.0 if abs(value) > 200 else float(value)
        elif len(parts) >= 2 and parts[0] == "B":
            if parts[1].isdigit():
                battery["level_pct"] = int(parts[1])
            if len(parts) >= 3 and parts[2].lstrip("-").isdigit():
                battery["temp_c"] = int(parts[2]) / 10.0
            if len(parts) >= 4:
                battery["status"] = parts[3]
        elif len(parts) >= 3 and parts[0] == "C" and parts[2].isdigit():
            cpu: CpuState = {
                "cur_khz": int(parts[2]),
                "governor": parts[3] if len(parts) >= 4 else "",
            }
            if len(parts) >= 5 and parts[4].isdigit():
                cpu["max_khz"] = int(parts[4])
            cpus[parts[1]] = cpu
    hottest = max(thermal.values()) if thermal else battery.get("temp_c")
    return {"thermal_c": thermal, "battery": battery, "cpu": cpus, "max_temp_c": hottest}
