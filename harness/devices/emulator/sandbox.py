"""The emulated phone's filesystem: a host directory that stands for ``/`` of the phone.

Layout of ``root``::

    data/local/tmp/        the phone's /data (what adb push targets)
    sdcard/                the phone's /sdcard
    sys/...                thermal, battery and cpufreq files, kept up to date by the emulator
    .edgefarm-emulator/    the emulator's own state, invisible to device paths:
        adb_keys           authorized adb public keys (the phone's /data/misc/adb/adb_keys)
        serialno           ro.serialno, kept across restarts
        bin/getprop        generated from the profile; the phone's /system/bin
        rootfs/            mount points of the namespace isolation

Device paths (sync service) resolve under ``root`` like a chroot would: symlinks are followed
with absolute targets taken as device paths, and anything that climbs out of ``root`` or into
the state directory is refused (:class:`PathEscapeError`).

Shell commands run under one of two isolations, see the package docstring.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

STATE_DIRNAME = ".edgefarm-emulator"
DEVICE_DIRS = ("data", "sdcard", "sys")  # top-level device directories backed by the root
Isolation = Literal["auto", "namespace", "rewrite"]

NAMESPACE_PATH = "/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SHELL_UID = 2000  # AID_SHELL: who `adb shell` runs as on a user build
_HOST_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_MAX_SYMLINKS = 40


class PathEscapeError(Exception):
    """A device path that leaves the sandbox (or reaches the emulator's own state)."""


def _quote_sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def getprop_script(props: dict[str, str]) -> str:
    """A POSIX sh ``getprop``: no argument prints ``[key]: [value]`` lines sorted by key, like
    Android; ``getprop KEY [DEFAULT]`` prints the value, or DEFAULT, or an empty line."""
    lines = [
        "#!/bin/sh",
        "# getprop of an edgefarm emulated phone, generated from its device profile.",
        'if [ "$#" -eq 0 ]; then',
        "cat <<'EDGEFARM_PROPS_END'",
    ]
    lines += [f"[{k}]: [{v}]" for k, v in sorted(props.items())]
    lines += ["EDGEFARM_PROPS_END", "exit 0", "fi", 'case "$1" in']
    for k, v in sorted(props.items()):
        lines.append(f"  {_quote_sh(k)}) printf '%s\\n' {_quote_sh(v)} ;;")
    lines += ["  *) printf '%s\\n' \"${2-}\" ;;", "esac", ""]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


class Sandbox:
    """Path mapping and shell execution for one emulated phone."""

    def __init__(self, root: Path, *, isolation: Isolation = "auto") -> None:
        self.root = root.resolve()
        self.state_dir = self.root / STATE_DIRNAME
        self.bin_dir = self.state_dir / "bin"
        self.rootfs = self.state_dir / "rootfs"
        self.requested_isolation: Isolation = isolation
        self.isolation: Literal["namespace", "rewrite"] = "rewrite"
        self._holder: subprocess.Popen[bytes] | None = None
        self._nsenter: str | None = None
        self._root_bytes = str(self.root).encode()
        # A device path at the start of a shell word: after start, blank, quote, = : ( ; & |.
        self._rewrite_re = re.compile(r"(?<![\w.~/$-])/(data|sdcard|sys)(?=[/\s;&|()<>'\"`:]|$)")

    # -- layout --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directory layout (idempotent)."""
        for d in ("data/local/tmp", "sdcard/Download", "sys"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "data/local/tmp").chmod(0o771)
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        sh = self.bin_dir / "sh"
        if not sh.is_symlink():
            sh.unlink(missing_ok=True)
            sh.symlink_to("/bin/sh")

    def write_getprop(self, props: dict[str, str]) -> None:
        _write_atomic(self.bin_dir / "getprop", getprop_script(props), 0o755)

    # -- device paths --------------------------------------------------------------------

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        """The host path for ``device_path``; PathEscapeError if it leaves the sandbox."""
        if "\0" in device_path:
            raise PathEscapeError(f"{device_path!r}: invalid path")
        pending = [p for p in device_path.split("/") if p not in ("", ".")]
        stack: list[str] = []
        links = 0
        while pending:
            comp = pending.pop(0)
            if comp == "..":
                if not stack:
                    raise PathEscapeError(f"{device_path}: path escapes the device's root")
                stack.pop()
                continue
            if not stack and comp == STATE_DIRNAME:
                raise PathEscapeError(f"{device_path}: Permission denied")
            candidate = self.root.joinpath(*stack, comp)
            if (pending or follow_last) and candidate.is_symlink():
                links += 1
                if links > _MAX_SYMLINKS:
                    raise PathEscapeError(f"{device_path}: Too many levels of symbolic links")
                target = os.readlink(candidate)
                root_prefix = str(self.root) + "/"
                if target.startswith(root_prefix):  # made by a rewrite-mode shell: a host path
                    target = target[len(root_prefix) - 1 :]
                if target.startswith("/"):
                    stack = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            stack.append(comp)
        if stack and stack[0] == STATE_DIRNAME:
            raise PathEscapeError(f"{device_path}: Permission denied")
        return self.root.joinpath(*stack)

    def used_bytes(self, exclude: Path | None = None) -> int:
        """Bytes held by regular files under /data and /sdcard (what the quota counts)."""
        total = 0
        for top in ("data", "sdcard"):
            for dirpath, _dirs, files in os.walk(self.root / top):
                for name in files:
                    p = os.path.join(dirpath, name)
                    if exclude is not None and p == str(exclude):
                        continue
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    total += st.st_size
        return total

    # -- isolation -------------------------------------------------------------------------

    def start_isolation(self) -> None:
        """Pick and start the shell isolation (namespace if it works, else rewrite)."""
        if self.requested_isolation in ("auto", "namespace"):
            error = self._start_namespace()
            if error is None:
                self.isolation = "namespace"
                return
            if self.requested_isolation == "namespace":
                raise RuntimeError(f"namespace isolation unavailable: {error}")
            log.warning(
                "emulated phone at %s: namespace isolation unavailable (%s); shell commands "
                "get device paths rewritten instead",
                self.root,
                error,
            )
        self.isolation = "rewrite"

    def stop_isolation(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if holder.stdin is not None:
            holder.stdin.close()  # the holder's `cat` sees EOF and exits
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()

    def _prepare_rootfs(self) -> list[str]:
        """Create the mount points; return the shell lines that mount onto them."""
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)  # only mount points: the mounts live in a private ns
        r = self.rootfs
        for d in ("usr", "etc", "proc", "dev/shm", "data", "sdcard", "sys", "system/bin"):
            (r / d).mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        script = ["set -e", f"R={q(str(r))}"]

        def bind(src: str, dst: str, *, ro: bool, recursive: bool = True) -> None:
            flag = "--rbind" if recursive else "--bind"
            script.append(f'mount {flag} {q(src)} "$R/{dst}"')
            if ro:
                script.append(f'mount -o remount,bind,ro "$R/{dst}" || true')

        bind("/usr", "usr", ro=True)
        bind("/etc", "etc", ro=True)
        for name in _HOST_TOP_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                (r / name).symlink_to(os.readlink(host))
            elif host.is_dir():
                (r / name).mkdir()
                bind(str(host), name, ro=True)
        bind("/proc", "proc", ro=True)
        for node in _DEV_NODES:
            if Path("/dev", node).exists():
                (r / "dev" / node).touch()
                bind(f"/dev/{node}", f"dev/{node}", ro=False, recursive=False)
        if Path("/dev/shm").is_dir():
            bind("/dev/shm", "dev/shm", ro=False)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            (r / "dev" / name).symlink_to(target)
        for top in DEVICE_DIRS:
            bind(str(self.root / top), top, ro=False, recursive=False)
        bind(str(self.bin_dir), "system/bin", ro=True, recursive=False)
        return script

    def _start_namespace(self) -> str | None:
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        chroot = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin")
        if not (unshare and nsenter and chroot):
            return "unshare, nsenter or chroot is not installed (util-linux, coreutils)"
        try:
            script = self._prepare_rootfs()
        except OSError as exc:
            return f"cannot prepare {self.rootfs}: {exc}"
        # "ready" comes from inside the chroot, so nsenter --root never sees the host root.
        # The holder then waits on its stdin: when the emulator goes, so does the namespace.
        script.append(
            f"exec {shlex.quote(chroot)} \"$R\" /bin/sh -c 'echo ready; exec cat >/dev/null'"
        )
        body = "\n".join(script)
        # Map our uid to 2000 (shell) like a phone's adb shell; older util-linux (< 2.38) has
        # no --map-user, so fall back to mapping it to root inside the namespace.
        errors: list[str] = []
        for user_flags in (
            [f"--map-user={_SHELL_UID}", f"--map-group={_SHELL_UID}", "--keep-caps"],
            ["--map-root-user"],
        ):
            argv = [unshare, "--user", *user_flags, "--mount", "--propagation", "private"]
            argv += ["/bin/sh", "-c", body]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            ready = self._wait_ready(proc, timeout_s=10.0)
            if ready:
                self._holder, self._nsenter = proc, nsenter
                probe = self._probe_namespace()
                if probe is None:
                    return None
                errors.append(probe)
                self.stop_isolation()
                continue
            proc.kill()
            _out, err = proc.communicate()
            lines = err.decode(errors="replace").strip().splitlines()
            errors.append(lines[-1] if lines else f"exit status {proc.returncode}")
        return "; ".join(errors)

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    return False
                buf += chunk
                if b"ready\n" in buf:
                    return True
            return False
        finally:
            sel.close()

    def _probe_namespace(self) -> str | None:
        probe = "test -d /data/local/tmp && test -d /system/bin && echo ok"
        argv, env, cwd = self.shell_command(probe)
        try:
            res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"probe failed: {exc}"
        if res.stdout.strip() != b"ok":
            return f"probe failed: {res.stderr.decode(errors='replace').strip()[:200]}"
        return None

    # -- shell -------------------------------------------------------------------------------

    def shell_command(self, command: str) -> tuple[list[str], dict[str, str], Path | None]:
        """argv, environment and host cwd that run ``command`` as the phone's shell would."""
        if self._holder is not None and self._nsenter:
            argv = [
                self._nsenter,
                f"--target={self._holder.pid}",
                "--user",
                "--mount",
                "--root",
                "--wd",
                "--preserve-credentials",
                "--",
                "/bin/sh",
                "-c",
                command,
            ]
            env = self._env(
                path=NAMESPACE_PATH, home="/", data="/data", sdcard="/sdcard", tmp="/data/local/tmp"
            )
            return argv, env, None
        root = str(self.root)
        host_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env = self._env(
            path=f"{self.bin_dir}:{host_path}",
            home=root,
            data=f"{root}/data",
            sdcard=f"{root}/sdcard",
            tmp=f"{root}/data/local/tmp",
        )
        return ["/bin/sh", "-c", self.rewrite_command(command)], env, self.root

    def rewrite_command(self, command: str) -> str:
        """Rewrite mode: prefix device paths (/data, /sdcard, /sys words) with the root."""
        root = shlex.quote(str(self.root))
        return self._rewrite_re.sub(lambda m: f"{root}/{m.group(1)}", command)

    @staticmethod
    def _env(*, path: str, home: str, data: str, sdcard: str, tmp: str) -> dict[str, str]:
        return {
            "PATH": path,
            "HOME": home,
            "TMPDIR": tmp,
            "USER": "shell",
            "LOGNAME": "shell",
            "SHELL": "/system/bin/sh",
            "ANDROID_DATA": data,
            "ANDROID_ROOT": "/system",
            "ANDROID_STORAGE": "/storage",
            "EXTERNAL_STORAGE": sdcard,
            "ASEC_MOUNTPOINT": "/mnt/asec",
            "HOSTNAME": "localhost",
        }

    def output_filter(self) -> OutputFilter | None:
        """In rewrite mode, a filter that turns host paths in shell output back into device
        paths; None under namespace isolation (nothing to undo)."""
        return OutputFilter(self._root_bytes) if self.isolation == "rewrite" else None


class OutputFilter:
    """Streams bytes, replacing ``<root>/x`` with ``/x`` and a bare ``<root>`` with ``/``."""

    def __init__(self, root: bytes) -> None:
        self._root = root
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data
        # An occurrence of the root starting before `limit` is complete and so is the byte
        # after it; anything from `limit` on waits for more data.
        limit = len(buf) - len(self._root)
        out, pos = self._replace(buf, limit)
        keep_from = max(pos, limit)
        self._pending = buf[keep_from:]
        return out + buf[pos:keep_from]

    def flush(self) -> bytes:
        buf, self._pending = self._pending, b""
        out, pos = self._replace(buf, len(buf))
        return out + buf[pos:]

    def _replace(self, buf: bytes, limit: int) -> tuple[bytes, int]:
        parts: list[bytes] = []
        pos = 0
        while (i := buf.find(self._root, pos)) != -1 and i < limit:
            parts += [buf[pos:i], b"/"]
            pos = i + len(self._root)
            if buf[pos : pos + 1] == b"/":
                pos += 1
        return b"".join(parts), pos
