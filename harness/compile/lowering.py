"""What a TVM build does to the imported module before building it, and what it links.

Plain TVM (``Lowering()``) builds the module as imported. An offload (``Lowering("nnapi")``,
``Lowering("neuron")``) partitions it for an NNAPI-family accelerator first
(:mod:`harness.byoc`), describes what it offloaded for the artifact's manifest, and links the
generated C's header and driver. The build runs in a child process: a lowering travels there
as JSON (:meth:`Lowering.to_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.compile.records import ArtifactExtra, LoweringJson
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.toolchain import CrossToolchain


@dataclass(frozen=True)
class Lowering:
    """The backend-specific part of a TVM build; ``offload``: the BYOC dialect, if any."""

    offload: str | None = None

    def lower(self, mod: Any, options: BackendOptions) -> Any:
        """The imported Relax module transformed before the build."""
        if self.offload is None:
            return mod
        from harness.byoc import partition

        return partition(mod, self.offload, options).mod

    def artifact_extra(self, mod: Any) -> ArtifactExtra | None:
        """What the lowered module says about itself, for the artifact's manifest: the
        partition report, or the functions of a calibration build."""
        if self.offload is None:
            return None
        from harness.byoc import report_of
        from harness.byoc.candidates import calibration_of

        calibration = calibration_of(mod)
        if calibration is not None:
            return {"calibration": calibration}
        report = report_of(mod)
        return {"partition": report} if report is not None else None

    def link_options(
        self,
        *,
        android: bool,
        options: BackendOptions,
        toolchain: CrossToolchain | None = None,
    ) -> list[str]:
        """Extra compiler/linker arguments when the artifact is exported (by this machine's
        compiler, or by ``toolchain`` for another instruction set) or linked with the NDK
        (android)."""
        if self.offload is None:
            return []
        from harness.byoc.link import android_link_args, host_export_options

        if android:
            return android_link_args(self.offload, options)
        return host_export_options(toolchain, options)

    def to_json(self) -> LoweringJson:
        return {"offload": self.offload}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Lowering:
        offload = data.get("offload")
        if offload is not None and not isinstance(offload, str):
            raise JobError("compile", f"bad lowering {data!r}")
        return cls(offload)


class TvmBuild(Protocol):
    """What :func:`harness.compile.compile_artifact` needs of a backend that builds with TVM."""

    @property
    def name(self) -> str: ...

    @property
    def lowering(self) -> Lowering: ...

    def check_format(self, fmt: str, *, model_name: str) -> None: ...

    def resolve_options(self, given: BackendOptions | None) -> BackendOptions: ...
