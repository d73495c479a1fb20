"""An emulated Android phone: an ADB daemon on a TCP port, as a phone in ``adb tcpip`` mode.

Any ADB client (``adb connect``, adb-shell's ``AdbDeviceTcp``) talks to it exactly as to a
phone: the real wire protocol (CNXN, AUTH with RSA keys, OPEN/OKAY/WRTE/CLSE with one WRTE in
flight per stream), the ``shell:``/``exec:`` services and the ``sync:`` service (STAT, STA2,
LST2, LIST, SEND, RECV, QUIT). It is not a mock: the harness cannot tell it from a phone except
by its facts (``ro.edgefarm.emulated=1``, a model ending in ``(edgefarm emulated)``,
``ro.edgefarm.exec_abi`` naming the host's ABI, since commands run this host's binaries).

The phone's filesystem is a host directory, ``root``: device path ``/data/local/tmp/x`` is
``<root>/data/local/tmp/x``; likewise ``/sdcard`` and ``/sys`` (where the emulator keeps
thermal zones, the battery and cpufreq files current). The sync service resolves paths like a
chroot (absolute symlink targets are device paths) and refuses with FAIL any path that climbs
out of ``root`` or into the emulator's own state directory.

How shell commands see device paths — two isolations, chosen by ``isolation=``:

``namespace`` (``auto`` picks it when it works; no root privileges needed)
    One long-lived holder process per phone is started with ``unshare --user --mount``
    (util-linux), mapping the caller's uid to 2000 (``shell``, as ``adb shell`` runs on a user
    build). It builds a private root: the host's ``/usr``, ``/etc`` (and ``/bin``, ``/lib``...
    or their merged-usr symlinks) and ``/proc`` bound read-only, a few ``/dev`` nodes, and
    ``<root>/data``, ``<root>/sdcard``, ``<root>/sys`` bound at ``/data``, ``/sdcard``,
    ``/sys``, plus the generated ``getprop`` at ``/system/bin``; then it chroots into it.
    Every command joins that namespace with ``nsenter --root --wd`` and runs
    ``/bin/sh -c CMD`` with cwd ``/``: absolute device paths, ``cd``, ``ls -l``, ``stat``,
    ``df /data/local/tmp``, symlinks and programs that build paths at run time all behave as
    on a phone, and nothing outside ``root`` can be written (host paths are not even visible
    except the read-only system directories binaries need). Files created inside appear on
    the host owned by the emulator's user.
``rewrite`` (the fallback where user namespaces are unavailable, e.g. disabled by sysctl)
    ``/bin/sh -c`` runs with cwd ``root`` and ``<root>/.edgefarm-emulator/bin`` first on
    PATH. Words of the command that start with ``/data``, ``/sdcard`` or ``/sys`` get the
    root prefixed, and ``shell:`` output gets it taken off again. Limitation: only paths
    written literally in the command are mapped — paths built at run time, read from files or
    hard-coded in programs see the host's filesystem, and the command is not confined.

Neither is a security boundary against the person who runs the emulator: commands run with
that user's privileges, as the emulated phone's owner.

Deliberate departures from adbd, each documented where it is implemented: a failed SEND is
answered at DONE (see :mod:`.sync`); ``shell:`` without a command (an interactive shell) is
answered with an error message and closed; the emulator never advertises ``shell_v2``, so
clients use the v1 shell (no separate stderr, no exit status: append ``; echo $?``).
"""

from __future__ import annotations

from .phone import FEATURES, EmulatedPhone, serve
from .profiles import DEFAULT_PROFILE, PROFILES, DeviceProfile, get_profile
from .sandbox import PathEscapeError

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
