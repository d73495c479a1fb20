"""bench/tuning.py's short version: one small model, a two-step ladder of 4 and 8 trials per
task on this machine's kernel runner, each step confirmed, and the tuned, unconfirmed,
untuned and ort times measured side by side. The figures themselves are the benchmark's
(README, "Where tuning stands"); this checks that each step reports them, and that both
steps' builds are timed again side by side at the end."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from test_search import conv_relu

from harness.tuning.search import FAILED_RUN_S

import testmodels

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(900)
def test_the_tuning_benchmark_reports_each_step_confirmed_and_unconfirmed(tmp_path: Path) -> None:
    model = testmodels.save(conv_relu(), tmp_path, "conv")
    out = tmp_path / "steps.jsonl"
    command = [
        sys.executable,
        str(ROOT / "bench" / "tuning.py"),
        "--models",
        "",
        "--extra-model",
        f"conv={model}",
        "--trials",
        "4,8",
        "--batch",
        "4",
        "--population",
        "16",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--min-seconds",
        "0.05",
        "--confirm",
        "2",
        "--home",
        str(tmp_path / "home"),
        "--out",
        str(out),
    ]
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Each step's batch line says how far it is: the first step's one batch is all 4 it wants.
    assert re.search(r"; 4 saved \(4 of at most 4 candidates, \d+\.\d a second\)", proc.stdout)
    *steps, ladder = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["trials_per_task"] for s in steps] == [4, 8]
    assert [s["trials_measured"] for s in steps] == [4, 4]
    for step in steps:
        assert step["model"] == "conv" and step["threads"] == 1
        for field in ("untuned_ms", "tuned_ms", "unconfirmed_ms", "ort_ms"):
            assert 0 < step[field] < 1000, (field, step)
        assert step["tuned_vs_ort"] == round(step["tuned_ms"] / step["ort_ms"], 2)
        assert step["confirmation"]["failed"] == 0
        assert step["tuning"]["trials"] == step["trials_per_task"]
    # The first step times the workload's two best records again. The second times its two
    # best now beside the two the first confirmed, unless none of its four candidates beat
    # those: then nothing is new and the workload is skipped (no round run).
    first, second = (step["confirmation"] for step in steps)
    assert (first["workloads"], first["skipped"], first["records"], first["rounds"]) == (1, 0, 2, 3)
    if second["workloads"]:
        assert second["skipped"] == 0 and 2 <= second["records"] <= 4 and second["rounds"] == 3
    else:
        assert (second["skipped"], second["records"], second["rounds"]) == (1, 0, 0)
    # Either way, after each step the two records measured fastest have a confirmed time.
    for trials in ("4", "8"):
        store = tmp_path / "home" / "steps" / f"conv-{trials}" / "edgefarm.db"
        with closing(sqlite3.connect(store)) as db:
            best = db.execute(
                "SELECT confirmed_s FROM tuning_records WHERE run_s < ? ORDER BY run_s, id LIMIT 2",
                (FAILED_RUN_S,),
            ).fetchall()
        assert len(best) == 2 and all(c is not None and c > 0 for (c,) in best), (trials, best)
    # Each step's store was kept, and its tuned build timed again beside the other's and ort.
    assert ladder["model"] == "conv" and set(ladder["ladder"]) == {"4", "8"}
    assert all(0 < ms < 1000 for ms in ladder["ladder"].values()) and ladder["ort_ms"] > 0
    for trials in ("4", "8"):
        assert (tmp_path / "home" / "steps" / f"conv-{trials}" / "edgefarm.db").is_file()
    assert ladder["retimed"] is False

    # --ladder-only times the steps the home kept again, tuning nothing (the remedy for a
    # ladder that something else disturbed); a step the home does not hold is named.
    def bench(
        *changes: tuple[str, str], extra: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        argv = list(command)
        for flag, value in changes:
            argv[argv.index(flag) + 1] = value
        return subprocess.run(
            [*argv, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    again = tmp_path / "again.jsonl"
    proc = bench(("--out", str(again)), extra=("--ladder-only",))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tune:" not in proc.stdout and "batch:" not in proc.stdout
    (retimed,) = [json.loads(line) for line in again.read_text().splitlines()]
    assert retimed["retimed"] is True and set(retimed["ladder"]) == {"4", "8"}
    assert all(0 < ms < 1000 for ms in retimed["ladder"].values()) and retimed["ort_ms"] > 0
    proc = bench(("--out", str(again)), ("--trials", "4,16"), extra=("--ladder-only",))
    assert proc.returncode != 0 and "no step's store in" in proc.stderr
    assert "conv-16" in proc.stderr and "conv-4" not in proc.stderr.split("store in")[1]
