"""``edgefarm bench`` holds requests to the same bounds as the farm's API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.measure.protocol import WARMUP_MAX

import testmodels


def edgefarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_bench_refuses_protocol_values_out_of_bounds(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    proc = edgefarm("bench", str(model), "--warmup", str(WARMUP_MAX + 1))
    assert proc.returncode == 2
    assert f"--warmup is an integer from 0 to {WARMUP_MAX}" in " ".join(proc.stderr.split())
    proc = edgefarm("bench", str(model), "--min-seconds", "5", "--max-seconds", "1")
    assert proc.returncode == 2 and "below min-seconds" in proc.stderr
    proc = edgefarm("bench", str(model), "--max-seconds", "1e9")
    assert proc.returncode == 2 and "--max-seconds is a number" in proc.stderr


def test_bench_fails_an_oversized_input_at_prepare(tmp_path: Path) -> None:
    model = testmodels.save(testmodels.dynamic_batch(seed=2), tmp_path, "dyn")
    out = tmp_path / "r.json"
    proc = edgefarm("bench", str(model), "-i", "images:1000000x3x8x8", "--json", str(out))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    (doc,) = json.loads(out.read_text())
    assert doc["status"] == "failed"
    assert doc["error"]["stage"] == "prepare" and "EDGEFARM_MAX_INPUT" in doc["error"]["message"]
