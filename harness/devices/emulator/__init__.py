"""An emulated Android phone: an ADB daemon on a TCP port, as a phone in ``adb tcpip`` mode.

Any ADB client (``adb connect``, adb-shell's ``AdbDeviceTcp``) talks to it exactly as to a
phone: the real wire protocol (CNXN, AUTH with RSA keys, OPEN/OKAY/WRTE/CLSE with one WRTE in
flight per stream), the ``shell:``/``exec:`` services and the ``sync:`` service (STAT, STA2,
LST2, LIST, SEND, RECV, QUIT). It is not a mock: the harness cannot tell it from a phone except
by its facts (``ro.edgefarm.emulated=1``, a model ending in ``(edgefarm emulated)``,
``ro.edgefarm.exec_abi`` naming the host's ABI, since commands run this host's binaries).
An arm64 phone (``isa="arm64"``, :mod:`.isa`) runs aarch64 binaries instead, under qemu-user
in the same sandbox: ``exec_abi`` ``arm64-v8a``, ``ro.edgefarm.target`` ``linux-arm64``,
``ro.edgefarm.isa_emulator`` naming qemu.

The phone's filesystem is a host directory, ``root``: device path ``/data/local/tmp/x`` is
``<root>/data/local/tmp/x``; likewise ``/sdcard`` and ``/sys`` (where the emulator keeps
thermal zones, the battery and cpufreq files current). The sync service resolves paths like a
chroot (absolute symlink targets are device paths) and refuses with FAIL any path that climbs
out of ``root`` or into the emulator's own state directory.

How shell commands are isolated — chosen by ``isolation=``, told by ``ro.edgefarm.sandbox``:

``namespace`` (the default; no root privileges needed)
    One long-lived holder process per phone (:mod:`.nsinit`) is started with ``unshare
    --user --mount --net --ipc --uts`` (util-linux), mapping the caller's uid to 2000
    (``shell``, as ``adb shell`` runs on a user build). It builds a private root on a tmpfs:
    the host's ``/usr``, ``/etc`` (and ``/bin``, ``/lib``... or their merged-usr symlinks) and
    ``/proc`` bound read-only with everything mounted below them, a ``/dev`` of its own
    (read-only binds of a few device nodes, a private ``/dev/shm``), ``<root>/sys`` read-only
    at ``/sys`` and the generated ``getprop`` at ``/system/bin``; only ``<root>/data`` and
    ``<root>/sdcard`` are writable, at ``/data`` and ``/sdcard``. The network namespace has
    ``lo`` only: commands reach nothing on the host's network (the ADB daemon itself listens
    on the host; only the commands it runs are inside). Every mount step is checked, and the
    emulator then reads the holder's mount table from outside: anything writable but the
    phone's storage and its private tmpfs, or any step that failed (a read-only remount the
    kernel refused), stops the phone with an InfrastructureError. Every command joins the
    namespaces with ``nsenter --root --wd`` and runs ``/bin/sh -c CMD`` with cwd ``/``:
    absolute device paths, ``cd``, ``ls -l``, ``stat``, ``df /data/local/tmp``, symlinks and
    programs that build paths at run time behave as on a phone. Files created inside appear
    on the host owned by the emulator's user. Where the kernel has no user namespaces (a
    sysctl, a container's seccomp policy) the phone refuses to start.
``rewrite`` (only when asked for; ``auto`` picks it where namespaces are unavailable)
    ``/bin/sh -c`` runs with cwd ``root`` and ``<root>/.edgefarm-emulator/bin`` first on
    PATH. Words of the command that start with ``/data``, ``/sdcard`` or ``/sys`` get the
    root prefixed, and ``shell:`` output gets it taken off again. This is NOT confinement:
    commands run with the emulator's user and privileges and see the host's filesystem and
    network; only paths written literally in the command are mapped. It is logged as a
    warning and stated in the phone's facts.

Whatever a command on the phone can change (``/data``, ``/sdcard``; everything under the
root in rewrite mode) the emulator treats as hostile when it writes: the thermal/battery
state writer and the sync service walk directories by descriptor and never follow a link they
did not make (:mod:`.fsat`, :meth:`.sandbox.Sandbox.walk`), and pushes write only under
``/data`` and ``/sdcard``, as a phone's shell user can.

Deliberate departures from adbd, each documented where it is implemented: a failed SEND is
answered at DONE (see :mod:`.sync`); ``shell:`` without a command (an interactive shell) is
answered with an error message and closed; the emulator never advertises ``shell_v2``, so
clients use the v1 shell (no separate stderr, no exit status: append ``; echo $?``).
"""

from __future__ import annotations

from .paths import PathEscapeError
from .phone import FEATURES, EmulatedPhone, serve
from .profiles import DEFAULT_PROFILE, PROFILES, DeviceProfile, get_profile

__all__ = [
    "DEFAULT_PROFILE",
    "FEATURES",
    "PROFILES",
    "DeviceProfile",
    "EmulatedPhone",
    "PathEscapeError",
    "get_profile",
    "serve",
]
