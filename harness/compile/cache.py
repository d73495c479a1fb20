"""The content-addressed artifact cache.

An artifact is a directory ``<cache>/artifacts/<key>/`` holding the loadable library and a
``manifest.json`` with its provenance. The key hashes everything that changes the build: model
bytes, input spec, backend, target, options and toolchain versions. Artifacts are built in a
temporary directory and renamed into place, under a per-key file lock, so readers never see a
half-written artifact and concurrent builders build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.compile.records import Manifest
from harness.errors import HarnessBug
from harness.jsontypes import BackendOptions

log = logging.getLogger(__name__)

# Bump when edgefarm's own compile pipeline changes in a way that changes artifacts.
COMPILE_VERSION = "1"


def artifact_key(
    *,
    model_sha256: str,
    input_spec: str,
    backend: str,
    target: str,
    options: BackendOptions,
    tvm_version: str,
) -> str:
    """The cache key: sha256 over a canonical JSON of everything that shapes the build."""
    material = json.dumps(
        {
            "model": model_sha256,
            "inputs": input_spec,
            "backend": backend,
            "target": target,
            "options": options,
            "tvm": tvm_version,
            "edgefarm_compile": COMPILE_VERSION,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Artifact:
    """A built artifact: its key, directory and manifest."""

    key: str
    path: Path
    manifest: Manifest
    cache_hit: bool = False

    @property
    def library(self) -> Path:
        return self.path / str(self.manifest["library"])

    @property
    def compile_ms(self) -> float:
        return float(self.manifest.get("compile_ms", 0.0))


class ArtifactCache:
    """Artifacts on disk under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self._locks = root / "locks"

    def path(self, key: str) -> Path:
        return self.artifacts / key

    def lookup(self, key: str) -> Artifact | None:
        """The artifact for ``key`` if it is complete (manifest present, library intact)."""
        directory = self.path(key)
        manifest_path = directory / "manifest.json"
        try:
            manifest: Manifest = json.loads(manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        library = directory / str(manifest.get("library", ""))
        if not library.is_file() or library.stat().st_size != manifest.get("sizes", {}).get(
            "library_bytes"
        ):
            log.warning("artifact %s is incomplete; it will be rebuilt", key)
            return None
        return Artifact(key=key, path=directory, manifest=manifest, cache_hit=True)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        self._locks.mkdir(parents=True, exist_ok=True)
        with open(self._locks / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get_or_build(self, key: str, build: Callable[[Path], Manifest]) -> Artifact:
        """Return the cached artifact, or call ``build(tmpdir)`` once and publish its result.

        ``build`` writes the library into ``tmpdir`` and returns the manifest, which must name
        the library file under ``"library"``. The manifest is completed with sizes and key here.
        """
        found = self.lookup(key)
        if found is not None:
            return found
        with self._lock(key):
            found = self.lookup(key)  # someone else may have built it while we waited
            if found is not None:
                return found
            self.artifacts.mkdir(parents=True, exist_ok=True)
            tmp = self.artifacts / f".tmp-{key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                manifest = build(tmp)
                library = tmp / str(manifest.get("library", ""))
                if not library.is_file():
                    raise HarnessBug(f"artifact build for {key} did not write {library.name}")
                manifest["key"] = key
                manifest.setdefault("sizes", {})["library_bytes"] = library.stat().st_size
                manifest["sizes"]["total_bytes"] = sum(
                    p.stat().st_size for p in tmp.iterdir() if p.is_file()
                )
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
                final = self.path(key)
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("built artifact %s", key)
            return Artifact(key=key, path=final, manifest=manifest, cache_hit=False)
