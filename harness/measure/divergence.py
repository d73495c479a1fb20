"""``accuracy.first_divergence``: where an offloading build's outputs first go wrong.

When a ``tvm-nnapi`` / ``tvm-neuron`` run fails its comparison, the host that built it
re-runs the model's host build (generated C + the host reference driver) on the run's inputs
under the Relax VM's instrument. At every offloaded call, in execution order, the same Relax
function compiled for the CPU gets the arguments the offloaded call received, and the two
outputs are compared with the float32 tolerance of :mod:`harness.measure.accuracy`. The first
call outside it is the divergence: its function's operators, the operations they became,
shapes and errors (:class:`~harness.measure.accuracy.FirstDivergence`).

The functions come from partitioning the model again with the artifact's options (the
partition is deterministic: the same functions, the same names); a partition that does not
name the artifact's functions ends in ``failed``, as does anything else that goes wrong.

All TVM work runs in a child process (``python -m harness.measure.divergence``, one JSON
request on stdin, one result line on stdout), like a build: a crash in TVM or in the C
fails the diagnosis, never the measurement. :func:`first_divergence` never raises.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.compile.forkserver import fresh_child
from harness.errors import EdgefarmError, one_line
from harness.jsontypes import BackendOptions
from harness.measure.accuracy import (
    DivergentSubgraph,
    FirstDivergence,
    SubgraphOp,
    compare,
)
from harness.modelio import PreparedModel

log = logging.getLogger(__name__)

RESULT_MARKER = "EDGEFARM-DIVERGENCE-RESULT "
CPU_REFERENCE = "the same function built for the CPU"


class DivergenceRequest(TypedDict):
    """What the child reads: the model as the build imported it, the partition's options,
    the host library that ran (or runs) the offloaded subgraphs, and the run's inputs."""

    model_path: str
    model_name: str
    inputs: list[str]  # input specs NAME:1x3x8x8:float32
    dialect: str
    options: BackendOptions
    library: str
    arrays: str  # an .npz of the inputs, arr_0, arr_1, ... in the model's order


def first_divergence(
    model: PreparedModel,
    *,
    dialect: str,
    library: Path,
    options: BackendOptions,
    inputs: Sequence[np.ndarray],
    timeout_s: float,
) -> FirstDivergence:
    """Where the offloaded subgraphs of ``library`` (a host build of ``model`` for
    ``dialect`` with ``options``) first differ from their CPU builds on ``inputs``. Never
    raises: what prevents the answer is recorded (``status: failed``)."""
    start = time.perf_counter()
    try:
        result = _run_child(model, dialect, library, options, inputs, timeout_s)
    except Exception as exc:  # the diagnosis must never fail the measurement
        log.warning("first divergence of %s: %s", model.name, exc, exc_info=True)
        message = exc.message if isinstance(exc, EdgefarmError) else f"{type(exc).__name__}: {exc}"
        result = FirstDivergence(status="failed", message=one_line(message))
    result.wall_ms = round((time.perf_counter() - start) * 1000.0, 1)
    return result


def _run_child(
    model: PreparedModel,
    dialect: str,
    library: Path,
    options: BackendOptions,
    inputs: Sequence[np.ndarray],
    timeout_s: float,
) -> FirstDivergence:
    with tempfile.TemporaryDirectory(prefix="edgefarm-divergence-") as tmp:
        model_path = model.file.path
        if model_path is None:
            model_path = Path(tmp) / f"model.{model.format}"
            model_path.write_bytes(model.file.data)
        arrays = Path(tmp) / "inputs.npz"
        np.savez(arrays, *[np.asarray(a) for a in inputs])
        request: DivergenceRequest = {
            "model_path": str(model_path),
            "model_name": model.name,
            "inputs": [f"{s.name}:{s.shape_str()}:{s.dtype}" for s in model.inputs],
            "dialect": dialect,
            "options": options,
            "library": str(library),
            "arrays": str(arrays),
        }
        try:
            finished = fresh_child("harness.measure.divergence", json.dumps(request), timeout_s)
        except subprocess.TimeoutExpired:
            return FirstDivergence(
                status="failed", message=f"locating the divergence ran past {timeout_s:.0f} s"
            )
    stdout, stderr = finished.stdout, finished.stderr
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return FirstDivergence.model_validate_json(line[len(RESULT_MARKER) :])
    if finished.returncode < 0:
        what = f"crashed ({signal.Signals(-finished.returncode).name})"
    else:
        what = f"exited with status {finished.returncode} without a result"
    return FirstDivergence(
        status="failed",
        message=f"locating the divergence {what}: {one_line(stderr) or 'no message'}",
    )


# ------------------------------------------------------------------------------------------
# The child
# ------------------------------------------------------------------------------------------


def _offloaded(merged: Any) -> dict[str, Any]:
    """The offloaded functions of a partitioned (not yet generated) module, by symbol."""
    from tvm import relax

    return {
        gv.name_hint: func
        for gv, func in merged.functions.items()
        if isinstance(func, relax.Function) and func.attrs and "Codegen" in func.attrs
    }


def cpu_module(functions: dict[str, Any]) -> Any:
    """The offloaded functions as plain public Relax functions (their composite functions
    inlined), for a CPU build that can call each by its symbol."""
    import tvm
    from tvm import relax

    mod = tvm.IRModule()
    for symbol, func in functions.items():
        plain = func.without_attr("Codegen").with_attr("global_symbol", symbol)
        mod[symbol] = plain
    lifted = relax.transform.LambdaLift()(mod)
    for gv, func in list(lifted.functions.items()):
        if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs:
            lifted[gv] = func.without_attr("Composite")
    return relax.transform.InlinePrivateFunctions()(lifted)


def _describe(
    func: Any, dialect: str, options: BackendOptions
) -> tuple[list[SubgraphOp], list[str], list[int]]:
    """An offloaded function's operators (with their result shapes), the NN operations the
    codegen makes of them, and the indices of its constant (weight) parameters."""
    from harness.byoc.codegen import CONST_PARAMS_ATTR, build_model
    from harness.byoc.dialect import DEFAULT_FEATURE_LEVEL, DIALECTS
    from harness.byoc.report import op_calls, short_op
    from harness.byoc.translate import Refused, op_name, tensor_shape

    ops = []
    for _, call in op_calls(func):
        try:
            shape = list(tensor_shape(call, "result"))
        except Refused:
            shape = []
        ops.append(SubgraphOp(op=short_op(op_name(call)), shape=shape))
    level = options.get("feature_level", DEFAULT_FEATURE_LEVEL)
    try:
        model = build_model(func, DIALECTS[dialect], int(str(level)))
        operations = [op.code for op in model.operations]
    except Exception as exc:  # described as far as it goes
        operations = [f"(not translated: {one_line(str(exc))})"]
    weights = [int(i) for i in (func.attrs.get(CONST_PARAMS_ATTR) or [])]
    return ops, operations, weights


def locate(request: DivergenceRequest) -> FirstDivergence:
    """The child's work (module doc)."""
    import tvm
    from tvm import relax

    from harness.byoc.partition import partition
    from harness.modelio import model_from_bytes, parse_input_spec, prepare, to_relax

    try:  # first: fails fast
        library = tvm.runtime.load_module(request["library"])
    except Exception as exc:
        return FirstDivergence(
            status="failed",
            message=f"the host build {request['library']} does not load: {one_line(str(exc))}",
        )
    path = Path(request["model_path"])
    file = model_from_bytes(path.read_bytes(), name=request["model_name"], path=path)
    model = prepare(file, [parse_input_spec(s) for s in request["inputs"]])
    dialect, options = request["dialect"], request["options"]
    merged = partition(to_relax(model), dialect, options, codegen=False).mod
    functions = _offloaded(merged)
    if not functions:
        return FirstDivergence(status="none", message="nothing is offloaded")

    missing = [s for s in functions if not library.implements_function(s, True)]
    if missing:
        return FirstDivergence(
            status="failed",
            message=f"the host build has no {missing[0]} ({len(missing)} of {len(functions)} "
            "offloaded functions missing): it was partitioned differently",
        )
    byoc = relax.VirtualMachine(library, tvm.cpu())
    cpu = relax.VirtualMachine(tvm.compile(cpu_module(functions), target="llvm"), tvm.cpu())
    with np.load(request["arrays"]) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]

    n_params = {symbol: len(func.params) for symbol, func in functions.items()}
    seen: dict[str, int] = {}  # calls of each function so far
    state: dict[str, Any] = {"calls": 0, "checked": 0, "found": None, "error": None}

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *args: Any) -> int:
        if before or symbol not in n_params:
            return 0
        call = seen.get(symbol, 0)
        seen[symbol] = call + 1
        position = state["calls"]
        state["calls"] += 1
        if state["found"] is not None or state["error"] is not None:
            return 0
        try:
            k = n_params[symbol]
            ins, outs = list(args[:k]), [a.numpy() for a in args[k:]]
            expected = cpu[symbol](*ins)
            refs = [expected] if isinstance(expected, tvm.runtime.Tensor) else list(expected)
            acc = compare(outs, [r.numpy() for r in refs], reference_name=CPU_REFERENCE)
            state["checked"] += 1
            if not acc.passed:
                state["found"] = (symbol, position, call, acc, ins)
        except Exception as exc:
            state["error"] = f"at offloaded call {position} ({symbol}): {one_line(str(exc))}"
        return 0

    byoc.set_instrument(instrument)
    byoc["main"](*[tvm.runtime.tensor(a) for a in arrays])
    calls, checked = state["calls"], state["checked"]
    if state["error"] is not None:
        return FirstDivergence(
            status="failed", message=state["error"], checked=checked, calls=calls
        )
    if state["found"] is None:
        return FirstDivergence(
            status="none",
            message=f"all {calls} offloaded calls agree with {CPU_REFERENCE} on the host "
            "reference driver: the difference is outside them (the CPU part, or a device's "
            "own driver)",
            checked=checked,
            calls=calls,
        )
    symbol, position, call, acc, ins = state["found"]
    ops, operations, weights = _describe(functions[symbol], dialect, options)
    func = functions[symbol]
    outputs = [list(o.shape) for o in acc.per_output]
    subgraph = DivergentSubgraph(
        symbol=symbol,
        position=position,
        call=call,
        ops=ops,
        operations=operations,
        inputs=[
            [int(d) for d in ins[i].shape] for i in range(len(func.params)) if i not in weights
        ],
        weights=len(weights),
        outputs=outputs,
        max_abs_err=acc.max_abs_err,
        max_rel_err=acc.max_rel_err,
        cosine=acc.cosine,
        per_output=list(acc.per_output),
    )
    nth = f", call {call + 1} of its function" if seen.get(symbol, 1) > 1 else ""
    return FirstDivergence(
        status="found",
        message=f"offloaded call {position + 1} of {calls} ({symbol}{nth}) differs from "
        f"{CPU_REFERENCE}: max abs err {acc.max_abs_err:.3g}, cosine {acc.cosine:.6f}",
        checked=checked,
        calls=calls,
        subgraph=subgraph,
    )


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        request: DivergenceRequest = json.loads(sys.stdin.read())
        result = locate(request)
    except EdgefarmError as exc:
        result = FirstDivergence(status="failed", message=one_line(exc.message))
    except Exception as exc:  # ours or TVM's: the traceback on stderr, the message recorded
        traceback.print_exc()
        result = FirstDivergence(
            status="failed", message=f"{type(exc).__name__}: {one_line(str(exc))}"
        )
    sys.stdout.write("\n" + RESULT_MARKER + result.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
