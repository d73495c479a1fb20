"""Putting things on a device: the runtime bundle, artifacts, and per-run directories.

Layout under the device's work root (``/data/local/tmp/edgefarm`` on a phone)::

    runtime/<bundle hash>/   the runner and the TVM runtime libraries for that ABI
    artifacts/<cache key>/   a compiled model library
    runs/<run id>/           inputs and outputs of one run; removed afterwards

A directory counts as present only when its ``.complete`` marker exists; the marker is pushed
last, and each file is pushed under a temporary name and renamed, so an interrupted push never
leaves something that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.compile.cache import Artifact
from harness.config import get_settings
from harness.devices.base import Device
from harness.errors import HarnessBug, JobError

log = logging.getLogger(__name__)

MARKER = ".complete"
RUNNER_NAME = "edgefarm-runner"


@dataclass(frozen=True)
class Bundle:
    """The files a device needs to run artifacts of one target, and their combined hash."""

    target: str
    files: tuple[Path, ...]  # the runner first
    hash: str

    @property
    def runner(self) -> Path:
        return self.files[0]


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def runtime_bundle(target: str) -> Bundle:
    """The runtime bundle for ``target``, built on demand: for ``host`` with this machine's
    compiler; for ``android-arm64`` with the NDK (see harness/runner/ANDROID.md); for
    ``linux-arm64`` with the aarch64 cross compiler and the registry's aarch64 TVM runtime
    (:mod:`harness.runner.cross`). Pushed to a device the same way whatever built it."""
    from harness.runner.build import build_host_runner, runtime_libraries

    if target == "host":
        runner = build_host_runner()
        files = [runner, *runtime_libraries()]
        return Bundle(target, tuple(files), _hash_files(files))
    if target == "android-arm64":
        from harness.runner.android import android_bundle_files

        files = android_bundle_files()
        return Bundle(target, tuple(files), _hash_files(files))
    if target == "linux-arm64":
        from harness.runner.cross import cross_bundle_files
        from harness.toolchain import AARCH64_LINUX_GNU

        files = cross_bundle_files(target, AARCH64_LINUX_GNU)
        return Bundle(target, tuple(files), _hash_files(files))
    raise JobError("run", f"no runtime bundle for target {target!r}")


def _complete(device: Device, directory: str) -> bool:
    return device.exists(posixpath.join(directory, MARKER))


def _push_marker(device: Device, directory: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".marker", delete=False) as handle:
        handle.write("complete\n")
    try:
        device.push(Path(handle.name), posixpath.join(directory, MARKER))
    finally:
        Path(handle.name).unlink(missing_ok=True)


def _push_directory(device: Device, files: list[tuple[Path, str]], directory: str) -> None:
    for local, name in files:
        if "/" in name or name in ("", ".", ".."):
            raise HarnessBug(f"refusing to push a file named {name!r}")
        device.push(local, posixpath.join(directory, name))
    _push_marker(device, directory)


def ensure_bundle(device: Device, bundle: Bundle) -> str:
    """Push the runtime bundle unless the device already has this exact one. Returns its dir."""
    directory = posixpath.join(device.work_root, "runtime", bundle.hash)
    if _complete(device, directory):
        return directory
    log.info("%s: pushing runtime bundle %s", device.id, bundle.hash)
    names = [RUNNER_NAME] + [p.name for p in bundle.files[1:]]
    _push_directory(device, list(zip(bundle.files, names, strict=True)), directory)
    return directory


def ensure_artifact(device: Device, artifact: Artifact, *, cap_bytes: int | None = None) -> str:
    """Push the artifact's library unless already there; returns the artifact's directory.

    The device's artifact cache is kept under ``cap_bytes`` (default: the settings' cap) by
    removing the least recently used artifacts other than this one.
    """
    directory = posixpath.join(device.work_root, "artifacts", artifact.key)
    if _complete(device, directory):
        device.touch(posixpath.join(directory, MARKER))  # recently used
        return directory
    log.info("%s: pushing artifact %s", device.id, artifact.key)
    if cap_bytes is None:
        cap_bytes = get_settings().device_cache_cap_mb * 1024 * 1024
    evict_artifacts(
        device,
        keep=artifact.key,
        cap_bytes=cap_bytes,
        incoming_bytes=artifact.library.stat().st_size,
    )
    _push_directory(device, [(artifact.library, artifact.library.name)], directory)
    return directory


def deploy_markers(device: Device, bundle: Bundle, artifact: Artifact) -> tuple[str, str]:
    """The markers whose presence says the bundle and the artifact are on ``device``."""
    return (
        posixpath.join(device.work_root, "runtime", bundle.hash, MARKER),
        posixpath.join(device.work_root, "artifacts", artifact.key, MARKER),
    )


def ensure_deployed(
    device: Device,
    bundle: Bundle,
    artifact: Artifact,
    *,
    present: frozenset[str] | None = None,
) -> tuple[str, str]:
    """:func:`ensure_bundle` and :func:`ensure_artifact`, in no round trip or one when the
    device has both already (every run of an artifact on a device but its first).
    ``present``: the :func:`deploy_markers` found present just before (and touched), as
    :meth:`Device.preflight` reports them; without it, one shell command checks both markers
    and marks the artifact recently used. Returns their directories."""
    bundle_marker, artifact_marker = deploy_markers(device, bundle, artifact)
    directories = posixpath.dirname(bundle_marker), posixpath.dirname(artifact_marker)
    if present is None:
        quoted = shlex.quote(bundle_marker), shlex.quote(artifact_marker)
        script = (
            f"[ -f {quoted[0]} ] && [ -f {quoted[1]} ] && touch {quoted[1]} && "
            "echo edgefarm-deployed"
        )
        result = device.shell(["sh", "-c", script], timeout_s=get_settings().adb_timeout_s)
        if "edgefarm-deployed" in result.stdout:
            return directories
    elif bundle_marker in present and artifact_marker in present:
        return directories
    return ensure_bundle(device, bundle), ensure_artifact(device, artifact)


def evict_artifacts(
    device: Device, *, keep: str, cap_bytes: int, incoming_bytes: int = 0
) -> list[str]:
    """Remove least recently used artifacts until the cache plus ``incoming_bytes`` fits
    ``cap_bytes``. Incomplete ones (no marker: an interrupted push) go first. Returns the
    keys removed."""
    root = posixpath.join(device.work_root, "artifacts")
    entries = [e for e in device.usage(root) if e[0] != keep]
    total = sum(size for _, size, _ in entries) + incoming_bytes
    removed = []
    for name, size, last_used in sorted(entries, key=lambda e: e[2]):
        if total <= cap_bytes and last_used > 0:
            break
        device.remove(posixpath.join(root, name))
        removed.append(name)
        total -= size
        log.info("%s: evicted artifact %s (%d bytes)", device.id, name, size)
    return removed


def new_run_dir(device: Device) -> str:
    return posixpath.join(device.work_root, "runs", uuid.uuid4().hex[:16])
