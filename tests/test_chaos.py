"""The chaos soak (bench/chaos.py), short: the server farm — PostgreSQL, a private Redis, the
API and the worker host supervised as ``edgefarm up`` supervises them, four emulated phones —
under a fault every three seconds or so for 36 seconds (about twelve: the shuffled deck of eight
kinds dealt once and begun again): SIGKILLs of phone workers, the compile worker, beat and the
API, phones dropped mid-push and mid-run or restarted, Redis restarted empty. Every run
submitted ends exactly once; none is lost, none doubled.

The farm runs with short timeouts (a dead worker's run is reaped after 8 s, a lost message
resent after 15 s) so that it heals within the test's time."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from harness.config import get_settings

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    """bench/chaos.py, the same code the benchmark runs (bench/ is not a package: its sibling
    modules, bench/chaos_*.py, are imported from bench/ as the script imports them)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("edgefarm_bench_chaos", ROOT / "bench/chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


chaos = _bench()

FAST = {
    "EDGEFARM_LEASE_TIMEOUT_S": "8",
    "EDGEFARM_REAP_INTERVAL_S": "2",
    "EDGEFARM_QUEUED_TIMEOUT_S": "15",
    "EDGEFARM_BUSY_RETRY_S": "1",
    "EDGEFARM_RETRY_BACKOFF_MAX_S": "4",
    "EDGEFARM_WORKER_RESTART_BACKOFF_MAX_S": "4",
    "EDGEFARM_HEALTH_RECHECK_S": "5",
}


def test_every_run_ends_exactly_once_under_chaos(tmp_path: Path) -> None:
    config = chaos.SoakConfig(
        minutes=0.6,
        fault_free=False,
        fault_every_s=3.0,
        seed=9,
        drain_s=120.0,
        warmup_s=240.0,
        backends=("tvm-cpu", "tvm-neuron"),
        models=("conv64",),
        fresh_model_every_s=35.0,
        env=FAST,
        cache_dir=get_settings().cache_path,  # the runner build is shared with other tests
    )
    report = chaos.soak("server", config, tmp_path)
    summary = json.dumps({k: v for k, v in report.items() if k != "fault log"}, default=str)
    print(summary)  # the figures, with -s or when it fails

    every = report["all runs"]
    assert every["submitted"] > 20, summary
    assert every["lost"] == 0, summary
    assert every["doubled"] == 0, summary
    assert every["ended exactly once"] == every["submitted"], summary
    assert report["phases"]["chaos"]["drained"], summary

    injected = {kind for kind, count in report["faults"].items() if count}
    # A shuffled deck deals every kind in turn; a mid-run fault waits for a runner to start.
    assert {
        chaos.KILL_PHONE_WORKER,
        chaos.KILL_COMPILE_WORKER,
        chaos.KILL_BEAT,
        chaos.KILL_API,
        chaos.REDIS_RESTART,
    } <= injected, summary
    assert len(injected) >= 6, summary
    # The farm noticed the killed phone workers and their runs went on.
    waits = report["waits after a worker died"][chaos.KILL_PHONE_WORKER]
    assert waits["never resolved"] == 0, summary
