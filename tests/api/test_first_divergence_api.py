"""A result's ``accuracy.first_divergence`` (a failed tvm-nnapi / tvm-neuron comparison, located)
in the API: served in the result document as stored, typed in the OpenAPI schema."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from harness.measure.accuracy import DivergentSubgraph, FirstDivergence, SubgraphOp, compare

from apidata import add_model, add_result


def _accuracy_with_divergence() -> dict[str, Any]:
    out, ref = np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32)
    accuracy = compare([out], [ref], reference_name="onnxruntime")
    sub_accuracy = compare([out], [ref], reference_name="the same function built for the CPU")
    found = FirstDivergence(
        status="found",
        message="offloaded call 2 of 3 (fused_relax_sigmoid_nnapi) differs",
        checked=2,
        calls=3,
        subgraph=DivergentSubgraph(
            symbol="fused_relax_sigmoid_nnapi",
            position=1,
            call=0,
            ops=[SubgraphOp(op="sigmoid", shape=[1, 4])],
            operations=["LOGISTIC"],
            inputs=[[1, 4]],
            weights=0,
            outputs=[[1, 4]],
            max_abs_err=sub_accuracy.max_abs_err,
            max_rel_err=sub_accuracy.max_rel_err,
            cosine=sub_accuracy.cosine,
            per_output=list(sub_accuracy.per_output),
        ),
        wall_ms=12.5,
    )
    return replace(accuracy, first_divergence=found).to_dict()


def test_a_results_first_divergence_is_served(
    client: TestClient, session: Session, farm: dict[str, Any]
) -> None:
    model = add_model(session)
    result = add_result(
        session, model=model, device=farm["devices"]["mtk-a"], backend="tvm-nnapi", status="failed"
    )
    accuracy = _accuracy_with_divergence()
    result.document = {**result.document, "accuracy": accuracy}
    session.commit()

    body = client.get(f"/api/v1/results/{result.id}").json()
    served = body["document"]["accuracy"]["first_divergence"]
    assert served == accuracy["first_divergence"]
    assert served["subgraph"]["operations"] == ["LOGISTIC"]
    assert served["subgraph"]["max_abs_err"] == 1.0

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schemas["FirstDivergence"]["properties"]
    assert {"status", "message", "checked", "calls", "subgraph", "wall_ms"} <= set(fields)
    assert set(fields["status"]["enum"]) == {"found", "none", "failed"}
    assert "DivergentSubgraph" in schemas
