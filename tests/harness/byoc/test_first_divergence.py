"""``accuracy.first_divergence``: a tvm-nnapi / tvm-neuron run that fails its comparison says
which offloaded subgraph first went wrong (run by the host reference driver, against the same
function built for the CPU, fed the same arguments), and a failure to say so is recorded,
never raised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pydantic import MISSING

from harness.backends import get_backend
from harness.measure.divergence import first_divergence
from harness.measure.document import ResultDocument
from harness.measure.inputs import make_inputs
from harness.modelio import load

import byoc_models
import testmodels

FAST = ["--warmup", "1", "--min-iterations", "3", "--min-seconds", "0"]
# The host reference driver's test hook (harness/byoc/driver/src/ef_core.c): every operation
# of the named type adds 0.5 to its output. Read by the driver alone, set by these tests alone.
BREAK_OP = "EDGEFARM_NN_TEST_BREAK_OP"


def _inputs(model_path: Path) -> tuple[np.ndarray, ...]:
    model = load(model_path)
    arrays = make_inputs([(s.name, s.static_shape(), s.dtype) for s in model.inputs], 0)
    return tuple(arrays.values())


def test_a_broken_kernel_in_the_driver_is_located(tmp_path: Path) -> None:
    """A LOGISTIC kernel that adds 0.5: the comparison fails, and the first divergence is
    the second offloaded subgraph (dense + sigmoid, after a Sin on the CPU), not the first
    (dense), which has no LOGISTIC. ``edgefarm bench`` says so too."""
    path = testmodels.save(byoc_models.sigmoid_after_sin(), tmp_path, "sig")
    out = tmp_path / "r.json"
    command = [sys.executable, "-m", "harness.cli", "bench", str(path), "-b", "tvm-nnapi"]
    proc = subprocess.run(
        [*command, "--json", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, BREAK_OP: "LOGISTIC", "COLUMNS": "200"},
    )
    assert proc.returncode == 1, proc.stderr
    docs = json.loads(out.read_text())
    assert [d["backend"] for d in docs] == ["tvm-nnapi"]
    for raw in docs:
        assert raw["status"] == "failed" and raw["error"]["stage"] == "compare", raw["error"]
        doc = ResultDocument.model_validate(raw)  # typed, and read back as it was written
        assert doc.accuracy is not None
        found = doc.accuracy.first_divergence
        assert found is not MISSING
        assert found.status == "found", found.message
        assert (found.calls, found.checked) == (2, 2)
        sub = found.subgraph
        assert sub is not None
        assert sub.position == 1 and sub.call == 0
        assert "LOGISTIC" in sub.operations
        assert [o.op for o in sub.ops] == ["matmul", "sigmoid"]
        assert sub.inputs == [[1, 32]] and sub.outputs == [[1, 8]] and sub.weights == 1
        # The planted error: 0.5 on every output element of the sigmoid.
        assert abs(sub.max_abs_err - 0.5) < 1e-5
        assert sub.per_output[0].mismatched == 8
        assert sub.symbol in found.message
        assert sub.symbol.endswith(raw["partition"]["dialect"])
    stderr = " ".join(proc.stderr.split())
    assert "first divergence (found): offloaded call 2 of 2" in stderr
    assert "its operators: matmul 1x8, sigmoid 1x8" in stderr
    assert "its operations: FULLY_CONNECTED, LOGISTIC" in stderr


def test_first_divergence_says_none_or_why_it_could_not(tmp_path: Path) -> None:
    """Without the broken kernel every subgraph agrees with its CPU build (``none``), the
    repeated blocks' copies of one function included; a library that is not one, or a time
    limit too short, end ``failed`` with the reason."""
    path = testmodels.save(byoc_models.repeated_block(), tmp_path, "rep")
    model = load(path)
    backend = get_backend("tvm-nnapi")
    artifact = backend.compile(model, target="host", options=None)
    options = artifact.manifest["options"]
    inputs = _inputs(path)
    env_before = os.environ.pop(BREAK_OP, None)
    assert env_before is None, f"{BREAK_OP} is set in the test environment"

    agreed = first_divergence(
        model,
        dialect="nnapi",
        library=artifact.library,
        options=options,
        inputs=inputs,
        timeout_s=300,
    )
    assert agreed.status == "none", agreed.message
    assert (agreed.calls, agreed.checked) == (2, 2)
    assert agreed.subgraph is None

    bogus = tmp_path / "lib.so"
    bogus.write_text("not a library")
    broken = first_divergence(
        model, dialect="nnapi", library=bogus, options=options, inputs=inputs, timeout_s=300
    )
    assert broken.status == "failed"
    assert "does not load" in broken.message and broken.subgraph is None

    late = first_divergence(
        model,
        dialect="nnapi",
        library=artifact.library,
        options=options,
        inputs=inputs,
        timeout_s=0.01,
    )
    assert late.status == "failed" and "ran past" in late.message
