"""A stored build, run as it is: the A/B experiment's way to measure *that* artifact.

An A/B confirmation compares tonight's build with the last good night's; rebuilding the last
good model version with tonight's toolchain would hide exactly the regressions a toolchain
change causes (a new TVM). So an arm may be pinned to an artifact of the compile cache by its
key: :class:`PinnedBuild` runs that artifact on the device, or fails at ``compile`` saying why
it cannot (no longer cached, built for another target, for another model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.backends.base import Backend, Prepared, Target
from harness.byoc.report import in_declared_order
from harness.compile.cache import ArtifactCache
from harness.config import get_settings
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.measure.device_run import NativeRunner
from harness.measure.document import BuildProvenance
from harness.modelio import PreparedModel

_KEY = re.compile(r"[0-9a-f]{32}")


def check_artifact_key(key: str) -> str:
    """``key`` if it is an artifact cache key (32 hex digits); a JobError otherwise (a key is a
    directory name under the cache: nothing else may reach the file system)."""
    if not _KEY.fullmatch(key):
        raise JobError("compile", f"{key!r} is not an artifact key (32 hex digits)")
    return key


@dataclass(frozen=True)
class PinnedBuild(Backend):
    """``base``'s artifact ``key`` from the compile cache (``cache``: the settings' cache)."""

    base: Backend | None = None
    key: str = ""
    cache: ArtifactCache | None = field(default=None, compare=False)

    @classmethod
    def of(cls, base: Backend, key: str, cache: ArtifactCache | None = None) -> PinnedBuild:
        return cls(
            name=base.name,
            description=f"{base.name} artifact {check_artifact_key(key)}",
            formats=base.formats,
            default_options=base.default_options,
            base=base,
            key=key,
            cache=cache,
        )

    def prepare(
        self, model: PreparedModel, options: BackendOptions | None, where: Target
    ) -> Prepared:
        """The stored artifact, checked against the model and the device's target."""
        cache = self.cache or ArtifactCache(get_settings().cache_path)
        where.progress("compile", f"using stored artifact {self.key} for {model.name}")
        artifact = cache.lookup(self.key)
        if artifact is None:
            raise JobError(
                "compile", f"artifact {self.key} is not in the compile cache ({cache.root})"
            )
        manifest = artifact.manifest
        if manifest["backend"] != self.name:
            raise JobError(
                "compile", f"artifact {self.key} is a {manifest['backend']} build, not {self.name}"
            )
        if manifest["target"] != where.target:
            raise JobError(
                "compile",
                f"artifact {self.key} was built for {manifest['target']}; "
                f"{where.facts.id} runs {where.target} code",
            )
        if manifest["model"]["sha256"] != model.file.sha256:
            raise JobError(
                "compile",
                f"artifact {self.key} was built from model {manifest['model']['sha256'][:12]}, "
                f"not from {model.name} ({model.file.sha256[:12]})",
            )
        partition = manifest.get("extra", {}).get("partition")
        provenance: BuildProvenance = {
            "compile_options": manifest["options"],
            "artifact_key": artifact.key,
            "compile_ms": artifact.compile_ms,
            "cache_hit": True,
            "library_bytes": manifest["sizes"]["library_bytes"],
        }
        return Prepared(
            NativeRunner(artifact),
            provenance,
            in_declared_order(partition) if partition is not None else None,
        )
