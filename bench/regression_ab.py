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
from dataclasses import dataclass
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


@dataclass
class PairOutcome:
    name: str
    experiments: int
    verdicts: dict[str, int]
    true_ratio: float  # all block pairs pooled
    true_ratio_ci: tuple[float, float]
    median_ci_width: float  # of one experiment's ratio interval
    seconds_per_experiment: float

    def share(self, verdict: str) -> float:
        return self.verdicts.get(verdict, 0) / self.experiments

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiments": self.experiments,
            "verdicts": self.verdicts,
            "significant_share": self.share("slower") + self.share("faster"),
            "slower_share": self.share("slower"),
            "true_ratio": self.true_ratio,
            "true_ratio_ci": list(self.true_ratio_ci),
            "median_ci_width": self.median_ci_width,
            "seconds_per_experiment": self.seconds_per_experiment,
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
    outcomes = {}
    for name, done in results.items():
        logs = np.concatenate(
            [np.log(np.array(e.treatment_ms)) - np.log(np.array(e.control_ms)) for e in done]
        )
        half = 1.96 * float(logs.std(ddof=1)) / math.sqrt(logs.size)
        verdicts: dict[str, int] = {}
        widths = []
        for e in done:
            assert e.paired is not None
            verdicts[e.paired.verdict] = verdicts.get(e.paired.verdict, 0) + 1
            widths.append(e.paired.ratio_high - e.paired.ratio_low)
        mean = float(logs.mean())
        outcomes[name] = PairOutcome(
            name,
            len(done),
            verdicts,
            math.exp(mean),
            (math.exp(mean - half), math.exp(mean + half)),
            float(np.median(widths)),
            float(np.median(seconds[name])),
        ).to_dict()
    return {
        "blocks": blocks,
        "alpha": alpha,
        "min_effect": min_effect,
        "min_seconds_per_block": min_seconds,
        "pairs": outcomes,
    }


def with_confirmation(grid_row: dict[str, Any], ab: dict[str, Any]) -> dict[str, Any]:
    """The detector's figures (one row of ``simulate``'s grid) once each alert must also pass
    its A/B: a false alarm stands only if its A/A-like experiment says "slower" (the A/A
    pair's observed rate), a slowdown only if the A/B of that size does (the nearest measured
    pair's power). The A/B is a fresh measurement, independent of the nights that raised the
    alert, so the rates multiply."""
    pairs = ab["pairs"]
    false_positive = pairs["A/A"]["slower_share"]
    powers = {name: (p["true_ratio"] - 1.0, p["slower_share"]) for name, p in pairs.items()}

    def power(slowdown: float) -> float:
        nearest = min(powers.values(), key=lambda tp: abs(tp[0] - slowdown))
        return nearest[1]

    return {
        "false_alarms_per_100": grid_row["false_alarms_per_100"] * false_positive,
        "detected_within_2": {
            k: v * power(float(k.rstrip("%")) / 100.0)
            for k, v in grid_row["detected_within_2"].items()
        },
        "ab_false_positive_rate": false_positive,
    }
