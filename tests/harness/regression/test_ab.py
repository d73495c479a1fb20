"""A/B experiments on a real device (this machine): interleaved blocks of two compiled models."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.devices import open_device
from harness.errors import JobError
from harness.measure.protocol import Protocol
from harness.modelio import load
from harness.regression.ab import Arm, interleaved

from testmodels import convnet, save

FAST = Protocol(warmup=2, min_iterations=5, min_seconds=0.05, max_seconds=5.0)


def test_a_four_times_costlier_model_is_called_slower(tmp_path: Path) -> None:
    small = load(save(convnet(8, seed=1, size=32), tmp_path, "small"), [])
    large = load(save(convnet(32, seed=1, size=32), tmp_path, "large"), [])
    backend = get_backend("tvm-cpu")
    device = open_device("local")
    try:
        experiment = interleaved(
            device,
            Arm("A (small)", small, backend),
            Arm("B (large)", large, backend),
            blocks=4,
            protocol=FAST,
        )
    finally:
        device.close()
    assert len(experiment.control_ms) == len(experiment.treatment_ms) == 4
    paired = experiment.paired
    assert paired is not None and paired.verdict == "slower", experiment.to_dict()
    assert paired.ratio > 2.0
    assert paired.ratio_low <= paired.ratio <= paired.ratio_high
    assert experiment.pooled is not None and experiment.pooled.verdict == "slower"
    assert set(experiment.documents) == {"A (small)", "B (large)"}
    assert experiment.to_dict()["blocks"] == 4


def test_an_experiment_needs_two_blocks_and_a_model_that_builds(tmp_path: Path) -> None:
    model = load(save(convnet(4, size=16), tmp_path, "m"), [])
    device = open_device("local")
    try:
        with pytest.raises(JobError, match="blocks must be 2 to"):
            interleaved(
                device,
                Arm("A", model, get_backend("tvm-cpu")),
                Arm("B", model, get_backend("tvm-cpu")),
                blocks=1,
                protocol=FAST,
            )
        with pytest.raises(JobError, match=r"A: .*has no option 'bogus'"):
            interleaved(
                device,
                Arm("A", model, get_backend("tvm-cpu"), {"bogus": 1}),
                Arm("B", model, get_backend("tvm-cpu")),
                blocks=2,
                protocol=FAST,
            )
    finally:
        device.close()


def test_edgefarm_ab_prints_the_ratio_and_verdict_and_writes_the_figures(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    small = save(convnet(8, seed=1, size=32), tmp_path, "small")  # the models above: cached
    large = save(convnet(32, seed=1, size=32), tmp_path, "large")
    figures = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "ab", str(small), str(large), "--blocks", "3",
         "--min-seconds", "0.05", "--warmup", "1", "--json", str(figures)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "B/A = " in done.stdout and "slower" in done.stdout
    written = json.loads(figures.read_text())
    assert written["blocks"] == 3 and written["paired"]["verdict"] == "slower"

    bad = subprocess.run(
        [sys.executable, "-m", "harness.cli", "ab", str(tmp_path / "missing.onnx")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    said = "".join((bad.stdout + bad.stderr).split())  # rich wraps long lines anywhere
    assert "missing.onnxdoesnotexist" in said
    assert "Traceback" not in bad.stdout + bad.stderr
