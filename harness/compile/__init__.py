"""Compilation with TVM: targets, lowerings, the artifact cache and the compile step.

Which backend builds what is :mod:`harness.backends`'s business; a backend that builds with
TVM hands :func:`compile_artifact` itself (a :class:`TvmBuild`).
"""

from harness.compile.build import compile_artifact, tvm_version
from harness.compile.cache import Artifact, ArtifactCache, artifact_key
from harness.compile.lowering import Lowering, TvmBuild
from harness.compile.targets import TARGETS, TargetSpec, get_target

__all__ = [
    "TARGETS",
    "Artifact",
    "ArtifactCache",
    "Lowering",
    "TargetSpec",
    "TvmBuild",
    "artifact_key",
    "compile_artifact",
    "get_target",
    "tvm_version",
]
