"""Compilation: targets, backends, the artifact cache and the compile step."""

from harness.compile.backends import Backend, backend_names, get_backend, register_all
from harness.compile.build import compile_artifact, tvm_version
from harness.compile.cache import Artifact, ArtifactCache, artifact_key
from harness.compile.targets import TARGETS, TargetSpec, get_target

__all__ = [
    "TARGETS",
    "Artifact",
    "ArtifactCache",
    "Backend",
    "TargetSpec",
    "artifact_key",
    "backend_names",
    "compile_artifact",
    "get_backend",
    "get_target",
    "register_all",
    "tvm_version",
]
