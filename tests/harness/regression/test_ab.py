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


def test_edgefarm_ab_compares_two_stored_artifacts_as_they_were_built(tmp_path: Path) -> None:
    """--artifact-a/--artifact-b run the compile cache's builds (a result's artifact_key) as
    they are; a key that is not in the cache, not a key, or built from another model is a
    clear error."""
    import json
    import subprocess
    import sys

    small_path = save(convnet(8, seed=1, size=32), tmp_path, "small")
    large_path = save(convnet(32, seed=1, size=32), tmp_path, "large")
    small, large = load(small_path, []), load(large_path, [])
    backend = get_backend("tvm-cpu")
    device = open_device("local")
    try:
        target = device.facts().target or "host"
    finally:
        device.close()
    key_small = backend.compile(small, target=target, options=None).key
    key_large = backend.compile(large, target=target, options=None).key

    def ab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "ab", *args, "--blocks", "3",
             "--min-seconds", "0.05", "--warmup", "1"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    figures = tmp_path / "ab.json"
    done = ab(str(small_path), str(large_path), "--artifact-a", key_small,
              "--artifact-b", key_large, "--json", str(figures))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slower" in done.stdout and f"artifact {key_small[:12]}" in done.stdout
    written = json.loads(figures.read_text())
    assert written["paired"]["verdict"] == "slower"
    assert written["differences"]["median_ms"]["ratio"] > 2.0
    assert set(written["differences"]) >= {"median_ms", "peak_rss_kb"}

    said = {
        "not in the compile cache": ab(str(small_path), "--artifact-a", "0" * 32),
        "is not an artifact key": ab(str(small_path), "--artifact-a", "../../etc/passwd"),
        "was built from model": ab(str(small_path), "--artifact-a", key_large),
    }
    for expected, failed in said.items():
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0, text
        assert expected in " ".join(text.split()), text
        assert "Traceback" not in text


def test_a_pinned_arm_records_its_artifact_in_the_experiment(tmp_path: Path) -> None:
    """The experiment's record names each arm's stored build and gives every metric's
    paired difference: the same build against itself is no slower, and its memory is the
    same."""
    model = load(save(convnet(8, seed=1, size=32), tmp_path, "small"), [])
    backend = get_backend("tvm-cpu")
    device = open_device("local")
    try:
        key = backend.compile(model, target=device.facts().target or "host", options=None).key
        experiment = interleaved(
            device,
            Arm("A", model, backend, artifact_key=key),
            Arm("B", model, backend, artifact_key=key),
            blocks=4,
            protocol=FAST,
        )
    finally:
        device.close()
    record = experiment.record()
    assert record.control.artifact_key == record.treatment.artifact_key == key
    assert record.blocks == 4 and len(record.treatment.blocks["median_ms"]) == 4
    assert experiment.documents["A"].provenance.artifact_key == key
    assert record.differences["median_ms"].verdict != "slower" or (
        record.differences["median_ms"].ratio < 1.05
    )
    assert record.differences["peak_rss_kb"].ratio == pytest.approx(1.0, abs=0.05)
