"""The cost decision's candidates: each operator in one of them. The pattern check also
accepts the smaller matches a larger one then takes over (a dense alone, then dense + bias at
its add); counted twice, the candidates held 7 operators of a 5-operator MLP and the cost
decision weighed the dense twice (the web page's cost table disagreed with the partition
report)."""

from __future__ import annotations

from pathlib import Path

from harness.byoc.normalize import normalize
from harness.byoc.partition import PartitionOptions, find_candidates
from harness.modelio import load, to_relax

import testmodels


def test_candidates_are_disjoint_and_cover_each_operator_once(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mlp(seed=11), tmp_path, "mlp")
    mod = normalize(to_relax(load(path)))
    # NNAPI: dense + bias twice and the ReLU; Neuron fuses the first ReLU into its dense.
    for dialect, sizes in (("nnapi", [1, 2, 2]), ("neuron", [2, 3])):
        matches = find_candidates(mod, PartitionOptions.from_backend(dialect, {}))
        names = [var.name for match in matches for var, _ in match.bindings]
        assert len(names) == len(set(names)), (dialect, names)
        # MatMul, Add, Relu, MatMul, Add: each once.
        assert len(names) == 5, (dialect, names)
        assert sorted(len(match.bindings) for match in matches) == sizes, dialect
