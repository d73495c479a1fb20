"""Benchmark: a second `edgefarm bench` of the same model spends no time compiling.

Runs the command twice with a fresh EDGEFARM_HOME and prints both wall times, their ratio, and
the compile time recorded in the artifact's manifest. Usage: python bench/cache.py [MODEL_NAME]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet8"
    with tempfile.TemporaryDirectory(prefix="edgefarm-bench-cache-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "EDGEFARM_HOME": str(home)}
        edgefarm = [sys.executable, "-m", "harness.cli"]
        subprocess.run(
            [*edgefarm, "examples", name, "-o", tmp], check=True, env=env, capture_output=True
        )
        model = Path(tmp) / f"{name}.onnx"
        # Build the native runner first so that neither timed run pays for it.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from harness.runner.build import build_host_runner; build_host_runner()",
            ],
            check=True,
            env=env,
        )
        walls, docs = [], []
        for i in range(2):
            out = Path(tmp) / f"r{i}.json"
            start = time.perf_counter()
            subprocess.run(
                [*edgefarm, "bench", str(model), "--min-seconds", "0.2", "--json", str(out)],
                check=True,
                env=env,
                capture_output=True,
            )
            walls.append(time.perf_counter() - start)
            docs.append(json.loads(out.read_text())[0])
        prov = [d["provenance"] for d in docs]
        manifest = json.loads(
            (home / "cache" / "artifacts" / prov[0]["artifact_key"] / "manifest.json").read_text()
        )
    print(f"model: {name}")
    print(f"first  edgefarm bench: {walls[0]:7.2f} s wall (cache_hit={prov[0]['cache_hit']})")
    print(f"second edgefarm bench: {walls[1]:7.2f} s wall (cache_hit={prov[1]['cache_hit']})")
    print(f"ratio second/first:    {walls[1] / walls[0]:7.3f}")
    print(
        f"compile time in the manifest: {manifest['compile_ms']:.0f} ms "
        f"(stages: {', '.join(f'{k}={v:.0f}' for k, v in manifest['stages_ms'].items())})"
    )
    print(
        f"time the second run spent compiling: 0 ms (artifact {prov[1]['artifact_key']} reused)"
        if prov[1]["cache_hit"]
        else "second run compiled again: CACHE MISS"
    )


if __name__ == "__main__":
    main()
