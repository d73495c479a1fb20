"""The native benchmark runner: its C++ source, host and NDK builds, and its report schema.

``runner.cc`` is one program, ``edgefarm-runner``, that loads a TVM Relax module, times calls
of its entry function and prints one JSON object (see :mod:`harness.runner.result`).
"""

from harness.runner.build import build_host_runner, compile_runner, runtime_libraries
from harness.runner.result import (
    OpProfile,
    RunnerError,
    RunnerOk,
    RunnerReport,
    TensorFile,
    parse_runner_output,
)

__all__ = [
    "OpProfile",
    "RunnerError",
    "RunnerOk",
    "RunnerReport",
    "TensorFile",
    "build_host_runner",
    "compile_runner",
    "parse_runner_output",
    "runtime_libraries",
]
