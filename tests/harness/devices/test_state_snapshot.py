"""A phone's state snapshot is taken by shell builtins alone: one process on the phone.

It is taken twice per run under the lease; with a ``cat``/``tr`` per file read it cost
150-600 ms on an emulated phone each time."""

from __future__ import annotations

from harness.devices.adb import AdbDevice
from harness.devices.adbscripts import STATE_SCRIPT, parse_state


def test_the_state_script_runs_no_program(device: AdbDevice) -> None:
    whole = device.state()
    # With no PATH, any program the script starts fails: what it still reads is read by the
    # shell itself.
    result = device.shell(
        ["sh", "-c", "PATH=/nonexistent\n" + STATE_SCRIPT.strip()], timeout_s=30.0
    )
    assert result.exit_code == 0
    alone = parse_state(result.stdout)
    assert sorted(alone["thermal_c"]) == sorted(whole["thermal_c"])
    assert len(whole["thermal_c"]) >= 3
    assert sorted(alone["cpu"]) == sorted(whole["cpu"]) and len(whole["cpu"]) == 8
    assert all(cpu["governor"] and cpu.get("max_khz") for cpu in alone["cpu"].values())
    assert {"level_pct", "temp_c", "status"} <= set(alone["battery"])


def test_preflight_resets_checks_markers_and_reads_the_state_in_one(device: AdbDevice) -> None:
    root = device.work_root
    here, missing = f"{root}/artifacts/k1/.complete", f"{root}/artifacts/k2/.complete"
    device.shell(["sh", "-c", f"mkdir -p {root}/artifacts/k1 && touch -d @0 {here}"], timeout_s=30)
    # A runner left over from an interrupted run, and its run directory.
    device.shell(
        [
            "sh",
            "-c",
            f"mkdir -p {root}/runs/old && "
            f"(sleep 300 >/dev/null 2>&1 & echo $! > {root}/runs/old/runner.pid)",
        ],
        timeout_s=30,
    )
    found = device.preflight(reset=True, markers=[here, missing])
    assert found.present == frozenset({here})
    assert len(found.ended) == 1
    assert not device.exists(f"{root}/runs/old")
    assert sorted(found.state["cpu"]) == sorted(device.state()["cpu"])
    assert found.state["max_temp_c"] is not None
    # The marker found was touched: recently used.
    mtime = device.shell(["stat", "-c", "%Y", here], timeout_s=30).stdout.strip()
    assert int(mtime) > 0
    quiet = device.preflight(reset=False, markers=[])
    assert quiet.ended == [] and quiet.present == frozenset()


def test_shell_then_state_keeps_the_commands_output_and_exit_code(device: AdbDevice) -> None:
    argv = ["sh", "-c", "echo first; echo second; exit 3"]
    alone = device.shell(argv, timeout_s=30)
    result, state = device.shell_then_state(argv, timeout_s=30)
    assert (result.exit_code, result.stdout) == (alone.exit_code, alone.stdout)
    assert alone.exit_code == 3
    assert alone.stdout.splitlines() == ["first", "second"]
    assert sorted(state["thermal_c"]) == sorted(device.state()["thermal_c"])
    no_newline, _ = device.shell_then_state(["printf", "x"], timeout_s=30)
    assert no_newline.stdout == "x"
