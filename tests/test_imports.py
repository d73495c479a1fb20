"""The dependency direction (DESIGN.md): api -> harness, workers -> harness, never
api <-> workers, and harness imports neither fastapi nor celery.

Each check imports every module of a package in a fresh interpreter and looks at what
``sys.modules`` then holds, so an import buried in a submodule is caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
failed = {}
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running a __main__ is not importing it
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"roots": roots, "failed": failed}))
"""

FORBIDDEN = {
    "harness": {"fastapi", "starlette", "celery", "api", "workers"},
    "api": {"workers"},
    "workers": {"api", "fastapi", "starlette"},
}


def loaded_by(package: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    result = loaded_by(package)
    assert result["failed"] == {}, result["failed"]
    roots = set(result["roots"])  # type: ignore[call-overload]
    assert roots & FORBIDDEN[package] == set()
