"""A phone's state snapshot is taken by shell builtins alone: one process on the phone.

It is taken twice per run under the lease; with a ``cat``/``tr`` per file read it cost
150-600 ms on an emulated phone each time."""

from __future__ import annotations

from harness.devices.adb import _STATE_SCRIPT, AdbDevice, parse_state


def test_the_state_script_runs_no_program(device: AdbDevice) -> None:
    whole = device.state()
    # With no PATH, any program the script starts fails: what it still reads is read by the
    # shell itself.
    result = device.shell(
        ["sh", "-c", "PATH=/nonexistent\n" + _STATE_SCRIPT.strip()], timeout_s=30.0
    )
    assert result.exit_code == 0
    alone = parse_state(result.stdout)
    assert sorted(alone["thermal_c"]) == sorted(whole["thermal_c"])
    assert len(whole["thermal_c"]) >= 3
    assert sorted(alone["cpu"]) == sorted(whole["cpu"]) and len(whole["cpu"]) == 8
    assert all(cpu["governor"] and cpu.get("max_khz") for cpu in alone["cpu"].values())
    assert {"level_pct", "temp_c", "status"} <= set(alone["battery"])

