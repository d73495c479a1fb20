"""The emulated phone's filesystem and shell: a host directory that stands for ``/`` of the phone.

Layout of ``root``::

    data/local/tmp/        the phone's /data (what adb push targets)
    sdcard/                the phone's /sdcard
    sys/...                thermal, battery and cpufreq files, kept up to date by the emulator
    .edgefarm-emulator/    the emulator's own state, invisible to device paths:
        adb_keys           authorized adb public keys (the phone's /data/misc/adb/adb_keys)
        serialno           ro.serialno, kept across restarts
        bin/getprop        generated from the profile; the phone's /system/bin
        rootfs/            where the namespace isolation mounts the phone's root

Device paths (sync service) resolve under ``root`` like a chroot would (:mod:`.paths`).

Shell commands run under one of two isolations, see the package docstring: ``namespace``
(:mod:`.namespace` builds it, :mod:`.confinement` checks it) or ``rewrite``
(:mod:`.rewrite`). :class:`Sandbox` picks one. Only the namespace isolation confines them;
:meth:`Sandbox.start_isolation` refuses to fall back to rewriting unless asked to
(``isolation="auto"`` or ``"rewrite"``), and refuses to start at all when the namespaces are
there but the confinement cannot be built in full.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Literal

from . import fsat
from .confinement import PROBE_COMMAND, check_mounts, check_shell
from .namespace import ConfinementError, NamespaceHolder, NamespacesUnavailable, start_holder
from .paths import STATE_DIRNAME, Resolved, used_bytes, walk
from .rewrite import OutputFilter, rewrite_command

log = logging.getLogger(__name__)

Isolation = Literal["auto", "namespace", "rewrite"]

NAMESPACE_PATH = "/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


class Sandbox:
    """Path mapping and shell execution for one emulated phone."""

    def __init__(self, root: Path, *, isolation: Isolation = "namespace") -> None:
        self.root = root.resolve()
        self.state_dir = self.root / STATE_DIRNAME
        self.bin_dir = self.state_dir / "bin"
        self.rootfs = self.state_dir / "rootfs"
        self.requested_isolation: Isolation = isolation
        self.isolation: Literal["namespace", "rewrite"] = "rewrite"
        self._holder: NamespaceHolder | None = None
        self._root_bytes = str(self.root).encode()
        # A library in bin_dir preloaded into every command: the exec path of a phone of
        # another instruction set (:mod:`.isa`).
        self.preload: str | None = None

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

    def walk(
        self,
        device_path: str,
        *,
        follow_last: bool = True,
        create_parents: bool = False,
        for_writing: bool = False,
    ) -> contextlib.AbstractContextManager[Resolved]:
        """``device_path`` resolved under the root by descriptor: see :func:`.paths.walk`."""
        return walk(
            self.root,
            device_path,
            follow_last=follow_last,
            create_parents=create_parents,
            for_writing=for_writing,
        )

    def used_bytes(self, exclude: Path | None = None) -> int:
        """Bytes held by regular files under /data and /sdcard (what the quota counts)."""
        return used_bytes(self.root, exclude)

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
        if holder is not None:
            holder.stop()

    def _start_namespace(self) -> str | None:
        """Start the holder; None once it runs confined, else why namespaces are unavailable.
        ConfinementError if they are available but the confinement fails."""
        try:
            holder = start_holder(self.root, self.rootfs, self.bin_dir)
        except NamespacesUnavailable as exc:
            return str(exc)
        self._holder = holder
        problem = check_mounts(holder.pid, self.root) or check_shell(
            *self.shell_command(PROBE_COMMAND)
        )
        if problem is not None:
            self.stop_isolation()
            raise ConfinementError(f"cannot confine the phone: {problem}")
        return None

    # -- shell -------------------------------------------------------------------------------

    def shell_command(self, command: str) -> tuple[list[str], dict[str, str], Path | None]:
        """argv, environment and host cwd that run ``command`` as the phone's shell would."""
        if self._holder is not None:
            env = self._env(
                path=NAMESPACE_PATH, home="/", data="/data", sdcard="/sdcard", tmp="/data/local/tmp"
            )
            preload = f"/system/bin/{self.preload}" if self.preload is not None else None
            return self._holder.enter(command, preload=preload), env, None
        root = str(self.root)
        host_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env = self._env(
            path=f"{self.bin_dir}:{host_path}",
            home=root,
            data=f"{root}/data",
            sdcard=f"{root}/sdcard",
            tmp=f"{root}/data/local/tmp",
        )
        if self.preload is not None:
            env["LD_PRELOAD"] = str(self.bin_dir / self.preload)
            env["EDGEFARM_PHONE_STORAGE"] = f"{root}/data:{root}/sdcard"
        return ["/bin/sh", "-c", rewrite_command(self.root, command)], env, self.root

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
