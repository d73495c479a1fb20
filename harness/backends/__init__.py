"""Backends: how a model becomes something a device runs, and what that adds to a result.

A :class:`Backend` owns what callers would otherwise branch on: the model formats it accepts,
its options and their validation, the options a device completes, what a job builds on the
compile queue, what a device runs (:meth:`Backend.prepare`: a compiled artifact for the native
runner, or the framework's runtime as a Python runner) and what that adds to the result
document. Callers ask the backend, never its name. One module per backend; adding one is its
module and a line in :func:`register_all` (explicit, not at import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.backends import byoc, ort, tvm_cpu
from harness.backends.base import Backend, JobBuild, Prepared, Target
from harness.devices.base import DeviceFacts
from harness.errors import JobError
from harness.jsontypes import BackendOptions

__all__ = [
    "Backend",
    "JobBuild",
    "Prepared",
    "Target",
    "backend_names",
    "cpu_part",
    "get_backend",
    "register",
    "register_all",
]

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def register_all() -> None:
    """Register the backends edgefarm ships. Idempotent."""
    register(tvm_cpu.BACKEND)
    register(byoc.NNAPI)
    register(byoc.NEURON)
    register(ort.BACKEND)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a JobError (stage compile) naming the known ones."""
    if not _REGISTRY:
        register_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise JobError(
            "compile", f"unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}"
        ) from None


def backend_names() -> list[str]:
    if not _REGISTRY:
        register_all()
    return sorted(_REGISTRY)


def cpu_part(
    backend: str, facts: DeviceFacts, options: BackendOptions | None
) -> Callable[[Any], Any] | None:
    """What the search tunes of ``backend``'s build for a device with ``facts``: None for the
    whole model (tvm-cpu), else the lowering that partitions it as the device's build does, so
    that the tasks are the functions the partition leaves on the CPU. A backend without a TVM
    CPU part, or a cost-guided partition (decided by calibration on the phone, at the build),
    is a JobError."""
    chosen = get_backend(backend)
    lowering = getattr(chosen, "lowering", None)
    if lowering is None:
        raise JobError("compile", f"{backend} builds no TVM code: nothing to tune")
    if lowering.offload is None:
        return None
    resolved = chosen.device_options(facts, chosen.resolve_options(options)) or {}
    if resolved.get("partition") == "cost":
        raise JobError(
            "compile",
            f"{backend} with partition: cost decides its CPU part by calibrating on the phone at "
            "build time; tune with partition: all (the records apply wherever a function of "
            "the CPU part is one of its tasks)",
        )
    return lambda mod: lowering.lower(mod, resolved)
