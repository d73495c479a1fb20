"""``edgefarm --version``, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

from harness import __version__


def _edgefarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_version_alone_prints_the_version_and_succeeds() -> None:
    res = _edgefarm("--version")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == f"edgefarm {__version__}"
    assert "Missing command" not in res.stdout + res.stderr


def test_version_wins_over_a_command_and_other_options() -> None:
    for args in (("--debug", "--version"), ("--version", "devices", "list")):
        res = _edgefarm(*args)
        assert res.returncode == 0, (args, res.stdout + res.stderr)
        assert res.stdout.strip() == f"edgefarm {__version__}", args
