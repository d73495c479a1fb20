"""Backends: how a model becomes something a device runs.

Names are prefixed by family and looked up by name: ``tvm-*`` backends compile with TVM into an
artifact the native runner executes; ``ort`` is the framework-runtime baseline (onnxruntime,
no compilation). Register them with :func:`register_all` (explicit, not at import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import JobError

BackendKind = Literal["tvm", "framework"]


@dataclass(frozen=True)
class Backend:
    """A backend's identity and what it accepts."""

    name: str
    kind: BackendKind
    description: str
    formats: tuple[str, ...] = ("onnx", "tflite", "pt2")
    default_options: dict[str, Any] = field(default_factory=dict)

    def check_format(self, fmt: str, *, model_name: str) -> None:
        if fmt not in self.formats:
            raise JobError(
                "import",
                f"backend {self.name} runs {'/'.join(self.formats)} models; {model_name} is {fmt}",
            )

    def resolve_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """The backend's defaults overlaid with ``given``; unknown keys are a JobError."""
        options = dict(self.default_options)
        for key, value in (given or {}).items():
            if key not in options:
                known = ", ".join(sorted(options)) or "none"
                raise JobError(
                    "compile", f"backend {self.name} has no option {key!r} (options: {known})"
                )
            options[key] = value
        return options

    def lower(self, mod: Any, options: dict[str, Any]) -> Any:
        """Backend-specific transformation of the imported Relax module before the build."""
        return mod

    def device_options(
        self, device: dict[str, Any], options: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """``options`` completed from the device's facts (``DeviceFacts.to_dict()``)."""
        return options

    def artifact_extra(self, mod: Any) -> dict[str, Any] | None:
        """What the lowered module says about itself, for the artifact's manifest."""
        return None

    def link_options(self, *, android: bool, options: dict[str, Any]) -> list[str]:
        """Extra compiler/linker arguments when the artifact is exported (host) or linked
        with the NDK (android)."""
        return []


@dataclass(frozen=True)
class ByocBackend(Backend):
    """TVM Relax with subgraphs offloaded to an NNAPI-family accelerator (harness.byoc)."""

    dialect: str = "nnapi"

    def resolve_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """As for every backend, plus the version of the BYOC code: the options are part of
        the artifact cache key, so a changed codegen or driver never reuses an old artifact."""
        from harness.byoc.link import byoc_version

        # A version recorded in earlier resolved options is replaced, never trusted.
        user = {k: v for k, v in (given or {}).items() if k != "byoc_version"}
        return {**super().resolve_options(user), "byoc_version": byoc_version()}

    def lower(self, mod: Any, options: dict[str, Any]) -> Any:
        from harness.byoc import partition

        return partition(mod, self.dialect, options).mod

    def device_options(
        self, device: dict[str, Any], options: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """A phone's NNAPI feature level bounds what tvm-nnapi may offload; a phone without
        NNAPI (SDK level below 27) is refused. The local device runs the reference driver.

        The default ``feature_level`` (NNAPI's highest) stands for "the highest the device
        supports": the farm stores a job's options with the defaults filled in, so a default
        is all a job that named no level carries to an older phone. A lower level given is a
        ceiling the device must reach."""
        if self.dialect != "nnapi" or device.get("kind") == "local":
            return options
        level = device.get("nnapi_feature_level")
        if level is None:
            raise JobError(
                "partition",
                f"{device.get('id', 'the device')} runs Android SDK level "
                f"{device.get('sdk_level')}, which has no NNAPI (NNAPI needs SDK level 27 or "
                f"newer); use tvm-cpu on it",
            )
        resolved = dict(options or {})
        given = resolved.get("feature_level")
        if given is None or given == self.default_options.get("feature_level"):
            given = min(int(level), int(given if given is not None else level))
            resolved["feature_level"] = given
        if int(given) > int(level):
            raise JobError(
                "partition",
                f"feature_level {given} is above what {device.get('id')} supports ({level}, "
                f"Android SDK level {device.get('sdk_level')})",
            )
        return resolved

    def artifact_extra(self, mod: Any) -> dict[str, Any] | None:
        from harness.byoc import report_of
        from harness.byoc.candidates import calibration_of

        calibration = calibration_of(mod)
        if calibration is not None:
            return {"calibration": calibration}
        report = report_of(mod)
        return {"partition": report} if report is not None else None

    def link_options(self, *, android: bool, options: dict[str, Any]) -> list[str]:
        from harness.byoc.link import android_link_args, host_export_options

        if android:
            return android_link_args(self.dialect, options)
        return host_export_options()


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def register_all() -> None:
    """Register the backends edgefarm ships. Idempotent."""
    register(
        Backend(
            "tvm-cpu",
            "tvm",
            "TVM Relax, plain CPU code generated by LLVM",
            default_options={"opt_level": 3},
        )
    )
    byoc_options: dict[str, Any] = {
        "opt_level": 3,
        "preference": "fast_single_answer",
        "partition": "all",
        # partition "cost": the measured costs the decision uses (filled in by calibration).
        "costs": None,
    }
    register(
        ByocBackend(
            "tvm-nnapi",
            "tvm",
            "TVM Relax, subgraphs offloaded through Android NNAPI (TVM's NNAPI pattern table)",
            default_options={**byoc_options, "feature_level": 7},
            dialect="nnapi",
        )
    )
    register(
        ByocBackend(
            "tvm-neuron",
            "tvm",
            "TVM Relax, subgraphs offloaded through MediaTek's Neuron Adapter API",
            default_options={**byoc_options, "neuron_lib": None},
            dialect="neuron",
        )
    )
    register(
        Backend(
            "ort",
            "framework",
            "onnxruntime CPU execution provider (baseline, no compilation)",
            formats=("onnx",),
            default_options={"threads": 0, "graph_optimization": "all"},
        )
    )


def get_backend(name: str) -> Backend:
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
