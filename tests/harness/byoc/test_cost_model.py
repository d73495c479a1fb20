"""The cost model on its own: boundary fits, the prediction of a choice, and the search
choosing differently when the costs say so (no TVM, no device)."""

from __future__ import annotations

import pytest

from harness.byoc.costmodel import Candidate, Costs, Line, Planner

KIB64 = 64 * 1024


def _chain(n: int, nbytes: int = KIB64) -> list[Candidate]:
    """x -> c0 -> c1 -> ... -> c{n-1} -> output, every tensor ``nbytes``."""
    out = []
    for k in range(n):
        out.append(
            Candidate(
                name=f"c{k}",
                ops=("nn.conv2d", "add"),
                signature=f"s{k}",
                members=(f"c{k}_conv", f"c{k}"),
                inputs=((f"c{k - 1}" if k else "x", nbytes),),
                output_bytes=nbytes,
                users=(f"c{k + 1}",) if k + 1 < n else (),
                used_outside=k + 1 == n,
            )
        )
    return out


def _costs(cpu: list[float], accel: list[float], fixed: float, per_byte: float = 0.0) -> Costs:
    return Costs(
        device_class="test",
        baseline_ms=sum(cpu) + 0.5,  # 0.5 ms of operators no candidate covers
        cpu_ms={f"s{k}": v for k, v in enumerate(cpu)},
        accel_ms={f"s{k}": v for k, v in enumerate(accel)},
        boundary=Line(fixed, per_byte),
    )


def test_line_fit_recovers_a_line_and_never_goes_negative() -> None:
    line = Line.fit([(1000, 0.3), (2000, 0.5), (4000, 0.9)])
    assert line.fixed_ms == pytest.approx(0.1)
    assert line.ms_per_byte == pytest.approx(0.0002)
    assert line(3000) == pytest.approx(0.7)
    # A decreasing or below-zero fit is clipped: a transfer never saves time.
    assert Line.fit([(1000, 0.5), (2000, 0.4)]).ms_per_byte == 0.0
    assert Line.fit([(1000, 0.1), (2000, 1.1)]).fixed_ms == 0.0


def test_costs_subtract_the_call_and_the_standalone_boundary() -> None:
    costs = Costs.from_measurements(
        device_class="test",
        baseline_ms=3.0,
        cpu_standalone_ms={"a": 1.05},
        accel_standalone_ms={"a": 0.45},
        standalone_bytes={"a": 1000},
        cpu_probes=[(1000, 0.06), (2000, 0.07)],  # call 0.05 ms
        accel_probes=[(1000, 0.15), (2000, 0.25)],  # 0.05 fixed + 0.0001 ms/byte
    )
    assert costs.cpu_ms["a"] == pytest.approx(1.0)
    assert costs.boundary.fixed_ms == pytest.approx(0.0)  # 0.05 - the 0.05 ms call
    assert costs.boundary.ms_per_byte == pytest.approx(0.0001)
    assert costs.accel_ms["a"] == pytest.approx(0.45 - 0.05 - 0.1)
    assert Costs.from_dict(costs.to_dict()) == costs


def test_the_prediction_merges_adjacent_candidates_into_one_subgraph() -> None:
    planner = Planner(_chain(3), _costs([1.0, 1.0, 1.0], [0.2, 0.2, 0.2], fixed=0.1, per_byte=1e-6))
    split = planner.predict({"c0", "c2"})
    assert [g.members for g in split.subgraphs] == [["c0"], ["c2"]]
    merged = planner.predict({"c0", "c1", "c2"})
    [group] = merged.subgraphs
    assert group.members == ["c0", "c1", "c2"]
    # Only the model's input and output cross the boundary of the merged subgraph.
    assert group.boundary_bytes == 2 * KIB64
    assert merged.latency_ms == pytest.approx(3.5 - 3.0 + 0.6 + 0.1 + 2 * KIB64 * 1e-6)
    assert planner.predict(set()).latency_ms == pytest.approx(3.5)


def test_the_choice_follows_the_costs() -> None:
    chain = _chain(3)
    # The accelerator wins everywhere: everything goes.
    fast = Planner(chain, _costs([1.0, 1.0, 1.0], [0.1, 0.1, 0.1], fixed=0.05)).choose()
    assert fast.offloaded == {"c0", "c1", "c2"}
    # The accelerator loses everywhere: nothing goes.
    slow = Planner(chain, _costs([0.1, 0.1, 0.1], [1.0, 1.0, 1.0], fixed=0.05)).choose()
    assert slow.offloaded == frozenset()
    # Only the middle one is slow there: the ends go, as two subgraphs, if a boundary is cheap...
    mixed = Planner(chain, _costs([1.0, 1.0, 1.0], [0.1, 5.0, 0.1], fixed=0.05)).choose()
    assert mixed.offloaded == {"c0", "c2"}
    assert len(mixed.subgraphs) == 2
    # ...and only the cheaper end's gain is worth one boundary when a boundary costs 0.85 ms.
    costly = Planner(chain, _costs([1.0, 1.0, 1.0], [0.2, 5.0, 0.05], fixed=0.85)).choose()
    assert costly.offloaded == {"c2"}


def test_a_boundary_that_no_single_candidate_can_pay_for_is_paid_once_by_the_group() -> None:
    """Each candidate alone gains 0.6 ms but a subgraph call costs 1 ms: alone they lose, as
    one subgraph they win 1.8 - 1.0. The search starts from 'everything' too, so it finds it."""
    planner = Planner(_chain(3), _costs([1.0, 1.0, 1.0], [0.4, 0.4, 0.4], fixed=1.0))
    assert all(planner.predict({c}).latency_ms > planner.costs.baseline_ms for c in ("c0", "c1"))
    best = planner.choose()
    assert best.offloaded == {"c0", "c1", "c2"}
    assert best.latency_ms == pytest.approx(3.5 - 3.0 + 1.2 + 1.0)


def test_a_candidate_without_costs_is_refused_by_name() -> None:
    costs = _costs([1.0, 1.0], [0.1, 0.1], fixed=0.0)
    with pytest.raises(KeyError, match="s2"):
        Planner(_chain(3), costs)
    assert [c.name for c in costs.missing(_chain(3))] == ["c2"]
