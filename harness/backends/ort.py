"""``ort``: the framework-runtime baseline, onnxruntime's CPU execution provider on the model
file itself (no compilation), run by a Python runner on a device that has this Python."""

from __future__ import annotations

from dataclasses import dataclass

from harness.backends.base import Backend, Prepared, Target
from harness.errors import JobError
from harness.jsontypes import BackendOptions, json_int
from harness.measure.device_run import PythonRunner
from harness.modelio import PreparedModel


@dataclass(frozen=True)
class OrtBackend(Backend):
    """onnxruntime, run by :mod:`harness.runner.ort_runner`."""

    def prepare(
        self, model: PreparedModel, options: BackendOptions | None, where: Target
    ) -> Prepared:
        if not where.facts.runs_host_python:
            raise JobError(
                "run",
                f"the {self.name} baseline runs on the local device only (phones have no "
                f"Python); use a tvm-* backend on {where.facts.id}",
            )
        import onnxruntime

        resolved = self.resolve_options(options)
        args = (
            "--threads",
            str(json_int(resolved["threads"], what="threads", stage="compile")),
            "--graph-optimization",
            str(resolved["graph_optimization"]),
        )
        return Prepared(
            PythonRunner("harness.runner.ort_runner", model.file, args),
            {"compile_options": resolved, "onnxruntime_version": onnxruntime.__version__},
        )


BACKEND = OrtBackend(
    "ort",
    "onnxruntime CPU execution provider (baseline, no compilation)",
    formats=("onnx",),
    default_options={"threads": 0, "graph_optimization": "all"},
)
