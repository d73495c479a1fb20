"""The emulated phone's filesystem: a host directory that stands for ``/`` of the phone.

Layout of ``root``::

    data/local/tmp/        the phone's /data (what adb push targets)
    sdcard/                the phone's /sdcard
    sys/...                thermal, battery and cpufreq files, kept up to date by the emulator
    .edgefarm-emulator/    the emulator's own state, invisible to device paths:
        adb_keys           authorized adb public keys (the phone's /data/misc/adb/adb_keys)
        serialno           ro.serialno, kept across restarts
        bin/getprop        generated from the profile; the phone's /system/bin
        rootfs/            where the namespace isolation mounts the phone's root

Device paths (sync service) resolve under ``root`` like a chroot would: symlinks are followed
with absolute targets taken as device paths, and anything that climbs out of ``root`` or into
the state directory is refused (:class:`PathEscapeError`).

Shell commands run under one of two isolations, see the package docstring. Only the namespace
isolation confines them; :meth:`Sandbox.start_isolation` refuses to fall back to rewriting
unless asked to (``isolation="auto"`` or ``"rewrite"``), and refuses to start at all when the
namespaces are there but the confinement cannot be built in full.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import selectors
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import fsat
from .nsinit import mount_id_at

log = logging.getLogger(__name__)

STATE_DIRNAME = ".edgefarm-emulator"
DEVICE_DIRS = ("data", "sdcard", "sys")  # top-level device directories backed by the root
Isolation = Literal["auto", "namespace", "rewrite"]

NAMESPACE_PATH = "/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SHELL_UID = 2000  # AID_SHELL: who `adb shell` runs as on a user build
_HOST_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_MAX_SYMLINKS = 40
# The only places a shell command on the phone may write, as on a phone's shell user: its
# storage (the phone root's data and sdcard directories) and a private /dev/shm.
_WRITABLE_DIRS = ("data", "sdcard")
_WRITABLE_TREES = tuple(f"/{d}" for d in _WRITABLE_DIRS)
_PRIVATE_TMPFS = ("/dev/shm",)
_SHM_OPTIONS = "mode=1777,size=64m"
_NSINIT = Path(__file__).with_name("nsinit.py")


class ConfinementError(RuntimeError):
    """The namespaces exist but the phone's confinement could not be built or checked."""


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


@dataclass(frozen=True)
class Resolved:
    """A device path resolved by :meth:`Sandbox.walk`: act on ``name`` relative to ``dir_fd``
    (an ``O_PATH`` descriptor, valid inside the ``with``), never on ``host_path``."""

    dir_fd: int
    name: str | None  # None: the path is the directory dir_fd itself
    host_path: Path  # for messages


@dataclass(frozen=True)
class _Mount:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    device: str  # major:minor of the superblock
    point: str
    options: frozenset[str]
    fstype: str

    @property
    def writable(self) -> bool:
        return "rw" in self.options


def _parse_mountinfo(text: str) -> list[_Mount]:
    from .nsinit import _unescape

    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split(" ")
        if not sep or len(fields) < 6:
            continue
        mounts.append(
            _Mount(
                mount_id=int(fields[0]),
                device=fields[2],
                point=_unescape(fields[4]),
                options=frozenset(fields[5].split(",")),
                fstype=right.split(" ", 1)[0],
            )
        )
    return mounts


class Sandbox:
    """Path mapping and shell execution for one emulated phone."""

    def __init__(self, root: Path, *, isolation: Isolation = "namespace") -> None:
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
        """Create the directory layout (idempotent).

        Directories are reached without following symlinks (a link where one of them should
        be is replaced): a command that ran unconfined (rewrite mode) may have planted one to
        make the emulator chmod or write a host directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        root_fd = fsat.open_root(self.root)
        try:
            for d in ("data/local/tmp", "sdcard/Download", "sys", f"{STATE_DIRNAME}/bin"):
                os.close(fsat.open_dir(root_fd, d))
            tmp_fd = fsat.open_dir(root_fd, "data/local/tmp")
            try:
                os.fchmod(tmp_fd, 0o771)
            finally:
                os.close(tmp_fd)
            bin_fd = fsat.open_dir(root_fd, f"{STATE_DIRNAME}/bin")
            try:
                try:
                    target = os.readlink("sh", dir_fd=bin_fd)
                except FileNotFoundError:
                    target = None
                except OSError:  # not a link
                    os.unlink("sh", dir_fd=bin_fd)
                    target = None
                if target != "/bin/sh":
                    if target is not None:
                        os.unlink("sh", dir_fd=bin_fd)
                    os.symlink("/bin/sh", "sh", dir_fd=bin_fd)
            finally:
                os.close(bin_fd)
        finally:
            os.close(root_fd)

    def write_getprop(self, props: dict[str, str]) -> None:
        root_fd = fsat.open_root(self.root)
        try:
            bin_fd = fsat.open_dir(root_fd, f"{STATE_DIRNAME}/bin")
        finally:
            os.close(root_fd)
        try:
            fsat.write_file(bin_fd, "getprop", getprop_script(props).encode(), 0o755)
        finally:
            os.close(bin_fd)

    # -- device paths --------------------------------------------------------------------

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        """The host path for ``device_path``; PathEscapeError if it leaves the sandbox.

        For display and tests: to act on the file, use :meth:`walk`, which keeps hold of the
        directory it resolved instead of a name that can be swapped for a link meanwhile."""
        with self.walk(device_path, follow_last=follow_last) as found:
            return found.host_path

    @contextlib.contextmanager
    def walk(
        self,
        device_path: str,
        *,
        follow_last: bool = True,
        create_parents: bool = False,
        for_writing: bool = False,
    ) -> Iterator[Resolved]:
        """Resolve ``device_path`` like a chroot would, holding a descriptor at each step.

        Each directory is opened relative to the one before with ``O_NOFOLLOW``; symlinks
        are read and followed here, absolute targets from the phone's root. So a command
        that swaps a directory for a link while the emulator (root on the host) pushes or
        pulls can make the operation fail, never reach a host path. ``..`` pops our own
        stack, so nothing climbs above the root, and the state directory is refused.

        ``for_writing``: the phone's shell user can write only under /data and /sdcard (the
        rest is read-only, as on a phone); anything else is OSError(EROFS).
        ``create_parents``: missing directories on the way are made (adb push does).
        A missing directory on the way is FileNotFoundError otherwise."""
        if "\0" in device_path:
            raise PathEscapeError(f"{device_path!r}: invalid path")
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stack: list[tuple[str, int]] = []  # the directories below the root we are in

        def here() -> int:
            return stack[-1][1] if stack else root_fd

        def writable() -> bool:
            return bool(stack) and stack[0][0] in _WRITABLE_DIRS

        try:
            pending = [p for p in device_path.split("/") if p not in ("", ".")]
            final: str | None = None
            links = 0
            while pending:
                comp = pending.pop(0)
                if comp == "..":
                    if not stack:
                        raise PathEscapeError(f"{device_path}: path escapes the device's root")
                    os.close(stack.pop()[1])
                    continue
                if not stack and comp == STATE_DIRNAME:
                    raise PathEscapeError(f"{device_path}: Permission denied")
                last = not pending
                try:
                    st = os.stat(comp, dir_fd=here(), follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        final = comp
                        break
                    if not create_parents:
                        raise
                    if not writable():
                        raise OSError(errno.EROFS, os.strerror(errno.EROFS), device_path) from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(comp, 0o755, dir_fd=here())
                    pending.insert(0, comp)
                    continue
                if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise PathEscapeError(f"{device_path}: Too many levels of symbolic links")
                    target = os.readlink(comp, dir_fd=here())
                    root_prefix = str(self.root) + "/"
                    if target.startswith(root_prefix):  # made by a rewrite-mode shell
                        target = target[len(root_prefix) - 1 :]
                    if target.startswith("/"):
                        while stack:
                            os.close(stack.pop()[1])
                    pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                    continue
                if last:
                    final = comp
                    break
                # Swapped for a link since the stat: ELOOP; for a file: ENOTDIR. Either way
                # the operation fails; it never goes through the link.
                fd = os.open(
                    comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=here()
                )
                stack.append((comp, fd))
            if stack and stack[0][0] == STATE_DIRNAME:
                raise PathEscapeError(f"{device_path}: Permission denied")
            if for_writing and not (writable() and final is not None):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), device_path)
            names = [name for name, _fd in stack]
            yield Resolved(
                dir_fd=here(),
                name=final,
                host_path=self.root.joinpath(*names, *([final] if final else [])),
            )
        finally:
            for _name, fd in stack:
                os.close(fd)
            os.close(root_fd)

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
        """Start the shell isolation the caller asked for.

        ``namespace``: confined, or ConfinementError. ``auto``: confined where the kernel has
        user namespaces, else rewrite mode with a warning. ``rewrite``: unconfined, on
        request. A namespace sandbox that comes up but cannot be confined in full (a mount
        that stays writable, a read-only remount that fails) is always an error, never a
        reason to fall back."""
        if self.requested_isolation in ("auto", "namespace"):
            unavailable = self._start_namespace()
            if unavailable is None:
                self.isolation = "namespace"
                return
            if self.requested_isolation == "namespace":
                raise ConfinementError(
                    f"cannot confine shell commands: user namespaces are unavailable "
                    f"({unavailable}); refusing to run them unconfined. isolation='rewrite' "
                    "(--isolation rewrite) runs them unconfined on purpose"
                )
            log.warning(
                "emulated phone at %s: user namespaces are unavailable (%s); falling back to "
                "rewriting device paths: shell commands are NOT confined",
                self.root,
                unavailable,
            )
        else:
            log.warning(
                "emulated phone at %s: rewrite isolation requested: shell commands are NOT "
                "confined (they run with the emulator's user and see the host's files)",
                self.root,
            )
        self.isolation = "rewrite"

    def stop_isolation(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if holder.stdin is not None:
            holder.stdin.close()  # nsinit sees EOF and exits
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()

    def _namespace_plan(self) -> dict[str, Any]:
        """What nsinit builds: the phone's root on a private tmpfs, everything read-only
        except /data and /sdcard (the phone root's) and a private /dev/shm."""
        r = str(self.rootfs)
        steps: list[dict[str, Any]] = []

        def at(rel: str) -> str:
            return f"{r}/{rel}"

        def mkdir(rel: str) -> None:
            steps.append({"op": "mkdir", "target": at(rel)})

        def bind(src: str, rel: str, *, readonly: bool = True, device: bool = False) -> None:
            steps.append(
                {
                    "op": "bind",
                    "source": src,
                    "target": at(rel),
                    "readonly": readonly,
                    "device": device,
                }
            )

        steps.append({"op": "tmpfs", "target": r, "options": "mode=755,size=1m"})
        for d in ("usr", "etc", "proc", "dev", "data", "sdcard", "sys", "system", "system/bin"):
            mkdir(d)
        bind("/usr", "usr")
        bind("/etc", "etc")
        for name in _HOST_TOP_LINKS:
            host = Path("/") / name
            if host.is_symlink():  # merged /usr: bin -> usr/bin
                steps.append({"op": "symlink", "target": at(name), "link_to": os.readlink(host)})
            elif host.is_dir():
                mkdir(name)
                bind(str(host), name)
        # The host's /proc, read-only with everything mounted below it: the shell can read
        # its own processes as on a phone, and change nothing through it.
        bind("/proc", "proc")
        # /dev is a tmpfs of the phone's own: a few device nodes (read-only binds still
        # write to the device) and a private /dev/shm; the host's /dev and /dev/shm stay out.
        steps.append({"op": "tmpfs", "target": at("dev"), "options": "mode=755,size=64k"})
        for node in _DEV_NODES:
            if Path("/dev", node).exists():
                steps.append({"op": "touch", "target": at(f"dev/{node}")})
                bind(f"/dev/{node}", f"dev/{node}", device=True)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            steps.append({"op": "symlink", "target": at(f"dev/{name}"), "link_to": target})
        mkdir("dev/shm")
        steps.append({"op": "tmpfs", "target": at("dev/shm"), "options": _SHM_OPTIONS})
        steps.append({"op": "remount_ro", "target": at("dev")})
        bind(str(self.root / "data"), "data", readonly=False)
        bind(str(self.root / "sdcard"), "sdcard", readonly=False)
        # /sys is the emulator's to write (from the host) and only readable inside, as a
        # phone's sysfs is for its shell user.
        bind(str(self.root / "sys"), "sys")
        bind(str(self.bin_dir), "system/bin")
        steps.append({"op": "remount_ro", "target": r})
        steps.append({"op": "loopback_up"})
        steps.append({"op": "hostname", "name": "localhost"})
        return {"root": r, "steps": steps}

    def _start_namespace(self) -> str | None:
        """Start the holder; None once it runs confined, else why namespaces are unavailable.
        ConfinementError if they are available but the confinement fails."""
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if not (unshare and nsenter):
            return "unshare or nsenter is not installed (util-linux)"
        try:
            # Only a mount point: the mounts live in the holder's private mount namespace.
            if self.rootfs.is_symlink() or not self.rootfs.is_dir():
                self.rootfs.unlink(missing_ok=True)
            elif any(self.rootfs.iterdir()):
                shutil.rmtree(self.rootfs)  # an older layout's mount points
            self.rootfs.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfinementError(f"cannot prepare {self.rootfs}: {exc}") from None
        # uid 2000 (shell) inside, like a phone's adb shell. Not --map-root-user: root in the
        # namespace could remount the read-only views writable again.
        argv = [
            unshare,
            "--user",
            f"--map-user={_SHELL_UID}",
            f"--map-group={_SHELL_UID}",
            "--keep-caps",  # nsinit needs the namespace's capabilities to mount
            "--mount",
            "--net",
            "--ipc",
            "--uts",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-I",
            "-S",
            str(_NSINIT),
            json.dumps(self._namespace_plan()),
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not self._wait_ready(proc, timeout_s=15.0):
            proc.kill()
            _out, err = proc.communicate()
            lines = err.decode(errors="replace").strip().splitlines()
            setup_errors = [ln[len("error: ") :] for ln in lines if ln.startswith("error: ")]
            if setup_errors:
                raise ConfinementError(f"cannot confine the phone: {setup_errors[-1]}")
            return lines[-1] if lines else f"unshare exited with status {proc.returncode}"
        self._holder, self._nsenter = proc, nsenter
        problem = self._check_confinement(proc.pid) or self._probe_namespace()
        if problem is not None:
            self.stop_isolation()
            raise ConfinementError(f"cannot confine the phone: {problem}")
        return None

    def _check_confinement(self, pid: int) -> str | None:
        """Look at the holder's mounts from outside: what a command on the phone can reach
        must be read-only, except the phone's storage and its private tmpfs mounts.

        This does not trust nsinit's report; a mount hidden under another one is skipped
        (no path reaches it)."""
        try:
            mounts = _parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
            host_devices = {
                m.device for m in _parse_mountinfo(Path("/proc/self/mountinfo").read_text())
            }
        except OSError as exc:
            return f"cannot read the phone's mount table: {exc}"
        if not mounts:
            return "the phone's mount table is empty"
        for m in mounts:
            if mount_id_at(f"/proc/{pid}/root{m.point}") != m.mount_id:
                continue
            if not m.writable:
                continue
            if any(m.point == t or m.point.startswith(t + "/") for t in _WRITABLE_TREES):
                continue
            if m.point in _PRIVATE_TMPFS and m.fstype == "tmpfs":
                if m.device in host_devices:
                    return f"{m.point} inside the phone is a host filesystem ({m.device})"
                continue
            return f"{m.point} is writable from inside the phone (a read-only remount failed)"
        # The storage bound at /data and /sdcard must be the phone root's own directories,
        # not wherever a planted symlink pointed.
        for top in ("data", "sdcard", "sys"):
            try:
                inside = os.stat(f"/proc/{pid}/root/{top}")
                mine = os.lstat(self.root / top)
            except OSError as exc:
                return f"cannot check /{top}: {exc}"
            if (inside.st_dev, inside.st_ino) != (mine.st_dev, mine.st_ino):
                return f"/{top} inside the phone is not {self.root / top}"
        return None

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
                "--net",
                "--ipc",
                "--uts",
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
