"""The ``local`` device: this machine, measured with the same protocol as a phone.

Files are "pushed" by atomic copy into a work root under ``EDGEFARM_HOME`` and commands run as
subprocesses, so the deployment and run code paths are the same as for a phone.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness.config import get_settings
from harness.devices.base import MIN_FREE_BYTES, DeviceFacts, Preflight, ShellResult
from harness.devices.records import CpuState, HealthReport, StateSnapshot, unhealthy
from harness.errors import CommandTimeout, InfrastructureError


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read(Path("/proc/cpuinfo")).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class LocalDevice:
    """This machine as a device (``local``)."""

    def __init__(self, work_root: Path | None = None) -> None:
        self._root = (work_root or get_settings().home / "local-device").resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def id(self) -> str:
        return "local"

    @property
    def work_root(self) -> str:
        return str(self._root)

    def facts(self) -> DeviceFacts:
        uname = platform.uname()
        return DeviceFacts(
            id="local",
            kind="local",
            manufacturer="",
            model=_cpu_model(),
            soc=uname.machine,
            abi=uname.machine,
            fingerprint=f"{uname.system} {uname.release}",
            target="host",
            serial=f"local@{uname.node}",
            extra={"cpus": os.cpu_count() or 0, "hostname": uname.node},
        )

    def state(self) -> StateSnapshot:
        """Thermal zones and CPU frequencies where Linux exposes them (often not in VMs)."""
        thermal: dict[str, float] = {}
        for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
            temp = _read(zone / "temp")
            if temp.lstrip("-").isdigit():
                thermal[_read(zone / "type") or zone.name] = int(temp) / 1000.0
        cpus: dict[str, CpuState] = {}
        for cpu in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*")):
            freq = _read(cpu / "cpufreq" / "scaling_cur_freq")
            if freq.isdigit():
                cpus[cpu.name] = {
                    "cur_khz": int(freq),
                    "governor": _read(cpu / "cpufreq" / "scaling_governor"),
                }
        load1, _, _ = os.getloadavg()
        return {
            "thermal_c": thermal,
            "cpu": cpus,
            "loadavg_1m": load1,
            "max_temp_c": max(thermal.values()) if thermal else None,
        }

    def _local_path(self, remote: str) -> Path:
        path = Path(remote).resolve()
        if path != self._root and self._root not in path.parents:
            raise InfrastructureError(f"local: path {remote} is outside the work root {self._root}")
        return path

    def push(
        self, local: Path, remote: str, *, timeout_s: float | None = None, atomic: bool = True
    ) -> None:
        dest = self._local_path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
        try:
            shutil.copyfile(local, tmp)
            shutil.copymode(local, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InfrastructureError(f"local: copying {local} to {remote} failed: {exc}") from None

    def pull(self, remote: str, local: Path, *, timeout_s: float | None = None) -> None:
        try:
            shutil.copyfile(self._local_path(remote), local)
        except OSError as exc:
            raise InfrastructureError(f"local: reading {remote} failed: {exc.strerror}") from None

    def exists(self, remote: str) -> bool:
        return self._local_path(remote).exists()

    def remove(self, remote: str) -> None:
        path = self._local_path(remote)
        if path == self._root:
            return
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def shell(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> ShellResult:
        # No shell at all here: argv is executed directly, so nothing needs quoting.
        full_env = {**os.environ, **(env or {})}
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise InfrastructureError(f"local: cannot start {argv[0]}: {exc.strerror}") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(
                f"local: {Path(argv[0]).name} did not finish within {timeout_s:.0f} s "
                "and was killed",
                stage="run",
            ) from None
        return ShellResult(exit_code=proc.returncode, stdout=stdout, stderr=stderr)

    def reset(self) -> list[int]:
        """End runners left over from interrupted runs (by their ``runner.pid``) and remove
        their run directories. Only for a caller that owns the device."""
        killed = []
        runs = self._root / "runs"
        for pid_file in runs.glob("*/runner.pid"):
            text = pid_file.read_text().strip()
            if text.isdigit():
                try:
                    os.kill(int(text), signal.SIGKILL)
                    killed.append(int(text))
                except (ProcessLookupError, PermissionError):
                    pass
        shutil.rmtree(runs, ignore_errors=True)
        return killed

    def usage(self, remote_dir: str) -> list[tuple[str, int, float]]:
        root = self._local_path(remote_dir)
        if not root.is_dir():
            return []
        entries = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
            marker = sub / ".complete"
            entries.append((sub.name, size, marker.stat().st_mtime if marker.exists() else 0.0))
        return entries

    def touch(self, remote: str) -> None:
        self._local_path(remote).touch()

    def preflight(self, *, reset: bool, markers: Sequence[str]) -> Preflight:
        """No round trips here: :meth:`reset`, the markers and :meth:`state` one by one."""
        ended = self.reset() if reset else []
        present = frozenset(m for m in markers if self.exists(m))
        for marker in present:
            self.touch(marker)
        return Preflight(ended, present, self.state())

    def shell_then_state(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> tuple[ShellResult, StateSnapshot]:
        result = self.shell(argv, timeout_s=timeout_s, env=env, cwd=cwd)
        return result, self.state()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self._root).free

    def health(self, *, bundle_hash: str | None = None) -> HealthReport:
        """This machine is reachable by definition; healthy while its work root has room."""
        try:
            free = self.free_bytes()
        except OSError as exc:
            return unhealthy(f"work root: {exc.strerror}", reachable=True)
        ok = free > MIN_FREE_BYTES
        return {
            "reachable": True,
            "shell": True,
            "free_bytes": free,
            "bundle_present": None,
            "ok": ok,
            "problem": None if ok else "low disk space",
        }

    def close(self) -> None:
        pass
