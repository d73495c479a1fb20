"""A farm worker owning a phone ends runners left over from interrupted runs first."""

from __future__ import annotations

import time
from pathlib import Path

from harness.backends import get_backend
from harness.bench import Protocol, compute_reference, make_model_inputs, measure
from harness.devices.adb import AdbDevice
from harness.devices.emulator import EmulatedPhone
from harness.modelio import load

import testmodels


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_exclusive_measure_ends_a_leftover_runner(tmp_path: Path) -> None:
    model = load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"))
    inputs = make_model_inputs(model, seed=0)
    reference = compute_reference(model, inputs)
    fast = Protocol(warmup=1, min_iterations=5, min_seconds=0.05, max_seconds=5.0)
    with EmulatedPhone("pixel-3a") as phone:
        device = AdbDevice.open(f"tcp:127.0.0.1:{phone.port}")
        try:
            # What an interrupted run leaves on a phone: its run directory, and a process
            # still going whose pid the runner wrote to runner.pid.
            code, _ = device.run_script(
                "d=/data/local/tmp/edgefarm/runs/old && mkdir -p $d && "
                "(sleep 300 >/dev/null 2>&1 & echo $! > $d/runner.pid)"
            )
            assert code == 0
            pid_file = phone.root / "data/local/tmp/edgefarm/runs/old/runner.pid"
            leftover = int(pid_file.read_text())
            assert _alive(leftover)

            shared = measure(
                model,
                device,
                get_backend("tvm-cpu"),
                inputs=inputs,
                reference=reference,
                protocol=fast,
            ).dump()
            assert shared["status"] == "ok"
            assert _alive(leftover), "a non-exclusive run must leave other runs alone"

            owned = measure(
                model,
                device,
                get_backend("tvm-cpu"),
                inputs=inputs,
                reference=reference,
                protocol=fast,
                exclusive=True,
            ).dump()
            assert owned["status"] == "ok", owned["error"]
            deadline = time.monotonic() + 5
            while _alive(leftover) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(leftover)
            assert not (phone.root / "data/local/tmp/edgefarm/runs/old").exists()
        finally:
            device.close()
