"""Validating the A/B confirmation as MobileLab did: A/A experiments (the same stored build as
control and treatment: the observed false-positive rate) and A/B pairs of known difference
(the observed power), on an emulated phone, with the farm's own experiment
(:func:`harness.regression.ab.interleaved`) and its defaults (blocks, alpha, min_effect).

The known differences: a model whose work is one loop of a fixed trip count, its input
(1x1024) tiled ``rows`` times, squashed (tanh) and summed back to 1x1024; control 200 rows,
treatments 204, 210 and 220 (2%, 5% and 10% more iterations of the same generated
loop, so the same code runs longer by that much, give or take the run's fixed costs).
(Changing a CNN's input resolution instead, 96 -> 97 -> 101, changed TVM's code, not only its
trip counts: the measured ratios were 1.35-1.8.) Each pair's true ratio is estimated from all
its experiments' block pairs pooled (hundreds), and each experiment is judged alone, as the
farm judges an alert's confirmation. Run by ``python
bench/regression.py ab`` (see there).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.backends import get_backend
from harness.config import get_settings
from harness.devices import open_device
from harness.devices.emulator.phone import EmulatedPhone
from harness.measure.protocol import MeasurementSettings
from harness.modelio import load
from harness.regression.ab import Arm, interleaved
from harness.regression.difference import paired_difference

CONTROL_ROWS = 200
TREATMENTS = {"A/A": 200, "+2%": 204, "+5%": 210, "+10%": 220}


def loop_model(rows: int) -> onnx.ModelProto:
    """``y = sum over rows of tanh(tile(x, rows))``: x 1x1024 -> y 1x1024; work is ``rows``."""
    nodes = [
        helper.make_node("Tile", ["x", "reps"], ["t"]),
        helper.make_node("Tanh", ["t"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"loop{rows}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
        initializer=[
            numpy_helper.from_array(np.array([rows, 1], dtype=np.int64), "reps"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def log(message: str) -> None:
    print(f"[ab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


STATISTICS = ("median_ms", "p10_ms")  # the block statistics compared


def judge(
    raw: list[dict[str, dict[str, list[float]]]],
    *,
    statistic: str,
    pairs: int,
    alpha: float,
    min_effect: float,
    sequential_to: int = 0,
) -> dict[str, Any]:
    """Each experiment of ``raw`` (its arms' per-block values) judged alone on its first
    ``pairs`` block pairs of ``statistic``, as the farm judges a confirmation (with
    ``sequential_to``: an inconclusive verdict judged again on twice the pairs, up to that
    many, as the farm's follow-up rounds do); and the true ratio from every block pair of
    every experiment pooled."""
    verdicts: dict[str, int] = {}
    widths = []
    used = []
    for experiment in raw:
        a = experiment["control"][statistic][:pairs]
        b = experiment["treatment"][statistic][:pairs]
        difference = paired_difference(a, b, alpha=alpha, min_effect=min_effect)
        looks = [pairs]
        while difference.verdict == "inconclusive" and 2 * looks[-1] <= sequential_to:
            # The farm's follow-up round: as many pairs again, pooled with the first.
            looks.append(2 * looks[-1])
            a = experiment["control"][statistic][: looks[-1]]
            b = experiment["treatment"][statistic][: looks[-1]]
            difference = paired_difference(a, b, alpha=alpha, min_effect=min_effect)
        used.append(looks[-1])
        verdicts[difference.verdict] = verdicts.get(difference.verdict, 0) + 1
        widths.append(difference.ratio_high - difference.ratio_low)
    values = np.array(
        [
            lb - la
            for e in raw
            for la, lb in zip(
                np.log(e["control"][statistic]), np.log(e["treatment"][statistic]), strict=True
            )
        ]
    )
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(values.size)
    n = len(raw)
    return {
        "experiments": n,
        "verdicts": verdicts,
        "slower_share": verdicts.get("slower", 0) / n,
        "significant_share": (verdicts.get("slower", 0) + verdicts.get("faster", 0)) / n,
        "true_ratio": math.exp(mean),
        "true_ratio_ci": [math.exp(mean - half), math.exp(mean + half)],
        "median_ci_width": float(np.median(widths)),
        "mean_pairs_used": float(np.mean(used)),
    }


def validate(*, experiments: int, blocks: int, min_seconds: float) -> dict[str, Any]:
    """A/A and the known-difference A/B pairs, ``experiments`` each, interleaved per round
    (A/A, ~2%, ~6%, ~10%, A/A, ...) so that a slow stretch of the machine hits all alike."""
    settings = get_settings()
    alpha, min_effect = settings.confirm_alpha, settings.confirm_min_effect
    protocol = MeasurementSettings.checked(warmup=3, min_seconds=min_seconds).protocol()
    backend = get_backend("tvm-cpu")
    with tempfile.TemporaryDirectory(prefix="edgefarm-ab-") as tmp:
        models = {}
        for rows in sorted(set(TREATMENTS.values())):
            path = Path(tmp) / f"loop-{rows}.onnx"
            path.write_bytes(loop_model(rows).SerializeToString())
            models[rows] = load(path, [])
        with EmulatedPhone("pixel-3a", thermal_time_constant_s=3600.0) as phone:
            device = open_device(f"tcp:127.0.0.1:{phone.port}")
            try:
                target = device.facts().target or "host"
                keys = {
                    r: backend.compile(m, target=target, options=None).key
                    for r, m in models.items()
                }
                control = Arm("A", models[CONTROL_ROWS], backend, artifact_key=keys[CONTROL_ROWS])
                results: dict[str, list[Any]] = {name: [] for name in TREATMENTS}
                seconds: dict[str, list[float]] = {name: [] for name in TREATMENTS}
                for round_ in range(experiments):
                    for name, rows in TREATMENTS.items():
                        treatment = Arm("B", models[rows], backend, artifact_key=keys[rows])
                        started = time.monotonic()
                        done = interleaved(
                            device,
                            control,
                            treatment,
                            blocks=blocks,
                            protocol=protocol,
                            alpha=alpha,
                            min_effect=min_effect,
                            seed=round_,
                        )
                        seconds[name].append(time.monotonic() - started)
                        results[name].append(done)
                    summary = ", ".join(
                        f"{n} {results[n][-1].paired.ratio:.3f} {results[n][-1].paired.verdict}"
                        for n in TREATMENTS
                        if results[n][-1].paired is not None
                    )
                    log(f"round {round_ + 1}/{experiments}: {summary}")
            finally:
                device.close()
    raw = {
        name: [
            {
                "control": {k: e.control_blocks[k] for k in STATISTICS},
                "treatment": {k: e.treatment_blocks[k] for k in STATISTICS},
            }
            for e in done
        ]
        for name, done in results.items()
    }
    return {
        "blocks": blocks,
        "alpha": alpha,
        "min_effect": min_effect,
        "min_seconds_per_block": min_seconds,
        "seconds_per_experiment": {n: float(np.median(v)) for n, v in seconds.items()},
        "pairs": judge_all(raw, blocks=blocks, alpha=alpha, min_effect=min_effect),
        "raw": raw,
    }


def judge_all(
    raw: dict[str, list[Any]], *, blocks: int, alpha: float, min_effect: float
) -> dict[str, dict[str, Any]]:
    """Every pair judged each way: by block median and 10th percentile, on the first 10
    pairs, on all, and as the farm does (10, then all when inconclusive: ``@10-20``)."""
    ways: dict[str, tuple[str, int, int]] = {}
    for statistic in STATISTICS:
        for k in sorted({min(10, blocks), blocks}):
            ways[f"{statistic}@{k}"] = (statistic, k, 0)
        if blocks > 10:
            ways[f"{statistic}@10-{blocks}"] = (statistic, 10, blocks)
    return {
        name: {
            way: judge(
                experiments,
                statistic=statistic,
                pairs=pairs,
                alpha=alpha,
                min_effect=min_effect,
                sequential_to=to,
            )
            for way, (statistic, pairs, to) in ways.items()
        }
        for name, experiments in raw.items()
    }


def with_confirmation(
    grid_row: dict[str, Any], ab: dict[str, Any], judged_as: str
) -> dict[str, Any]:
    """The detector's figures (one row of ``simulate``'s grid) once each alert must also pass
    its A/B, judged as ``judged_as`` (``median_ms@10``: block medians, 10 pairs): a false
    alarm stands only if its experiment says "slower" (the A/A pair's observed rate), a
    slowdown only if the A/B of that size does. The A/B is a fresh measurement, independent of
    the nights that raised the alert, so the rates multiply. The power used for a slowdown is
    that of the largest measured true difference not above it (conservative); below every
    measured one, the smallest's."""
    pairs = {name: judged[judged_as] for name, judged in ab["pairs"].items()}
    false_positive = float(pairs["A/A"]["slower_share"])
    measured = sorted(
        (float(p["true_ratio"]) - 1.0, float(p["slower_share"]))
        for name, p in pairs.items()
        if name != "A/A"
    )

    def power(slowdown: float) -> float:
        below = [share for size, share in measured if size <= slowdown]
        return below[-1] if below else measured[0][1]

    return {
        "false_alarms_per_100": grid_row["false_alarms_per_100"] * false_positive,
        "detected_within_2": {
            k: v * power(float(k.rstrip("%")) / 100.0)
            for k, v in grid_row["detected_within_2"].items()
        },
        "ab_false_positive_rate": false_positive,
        "ab_judged_as": judged_as,
    }
