"""edgefarm installed as a user installs it: the wheel, in a fresh venv outside the checkout.

The wheel is built with build isolation (as the Dockerfile's ``pip wheel .`` builds it) from a
copy of what the Dockerfile copies, so nothing is written into the checkout. It is installed
with every dependency into a new venv in a temporary directory from the configured package
index, exactly like ``pip install edgefarm`` (``--no-compile`` only skips precompiling
bytecode). Measured on the shared 2-core machine: the install 45-65 s (80-105 s with bytecode),
the whole module 2.5 min under other engineers' load; under the ~2 minutes at which borrowing
the dev venv's packages through a .pth file would have been the better trade, so the real
install it is. Every command runs from a working directory outside the checkout, with
PYTHONPATH and EDGEFARM_* cleared; a test checks that ``harness`` and its data files resolve
into the venv's site-packages and that no path of the checkout is on ``sys.path``: what ran is
the installed code with its installed runner sources, BYOC driver and migrations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import inspect

from harness.db import make_engine, metadata

ROOT = Path(__file__).resolve().parents[1]
# What the Dockerfile copies into the image before `pip install .`.
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "harness",
    "workers",
    "api",
    "migrations",
)
PACKAGES = ("harness", "workers", "api")
# Not build inputs (.dockerignore): a checkout's fetched assets; the image fetches its own.
DOCKER_IGNORED = ("__pycache__", "vendor")
BACKENDS = ("tvm-cpu", "tvm-nnapi", "tvm-neuron")


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # the working directory of every command: outside the checkout
    home: Path  # EDGEFARM_HOME
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def edgefarm(self) -> str:
        return str(self.venv / "bin" / "edgefarm")

    def run(
        self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            cwd=self.work,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
        return proc


def _copy_build_inputs(dest: Path) -> Path:
    dest.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns(*DOCKER_IGNORED))
        else:
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_build_inputs(tmp_path_factory.mktemp("install") / "src")


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    dist = source.parent / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = dist.glob("edgefarm-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Iterator[Installed]:
    base = wheel.parents[1]
    venv, work, home = base / "venv", base / "work", base / "home"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGEFARM_", "PYTHON", "VIRTUAL_ENV", "ANDROID_NDK"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        EDGEFARM_HOME=str(home),
        COLUMNS="200",
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = Installed(venv=venv, work=work, home=home, env=env)
    # --no-compile: bytecode is written on first import instead, of what is imported.
    result.run(
        result.python, "-m", "pip", "install", "--quiet", "--no-compile", str(wheel), timeout=900
    )
    yield result
    shutil.rmtree(venv, ignore_errors=True)  # 800 MB; pytest keeps its last three temp dirs


def test_the_wheel_carries_every_file_of_the_packages_and_the_migrations(
    source: Path, wheel: Path
) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        top_level = set(zf.read("edgefarm-0.1.0.dist-info/top_level.txt").decode().split())
    expected = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.is_file()
    }
    expected |= {
        "harness/db/migrations/" + path.relative_to(source / "migrations").as_posix()
        for path in (source / "migrations").rglob("*")
        if path.is_file()
    }
    assert {"harness/byoc/driver/src/ef_nnapi.c", "harness/db/migrations/env.py"} <= expected
    assert sorted(expected - names) == []
    assert top_level == set(PACKAGES)  # the migrations are no top-level package of their own


def test_the_installed_code_is_what_runs(installed: Installed) -> None:
    probe = (
        "import json, sys, sysconfig, harness; "
        "from harness.byoc.link import DRIVER_DIR; "
        "from harness.db.migrate import script_location; "
        "from harness.runner.build import RUNNER_SOURCE; "
        "print(json.dumps({'harness': harness.__file__, "
        "'purelib': sysconfig.get_paths()['purelib'], 'path': sys.path, "
        "'migrations': str(script_location()), 'driver': str(DRIVER_DIR), "
        "'runner': str(RUNNER_SOURCE)}))"
    )
    facts = json.loads(installed.run(installed.python, "-c", probe).stdout)
    purelib = Path(facts["purelib"]).resolve()
    assert purelib.is_relative_to(installed.venv.resolve())
    for key in ("harness", "migrations", "driver", "runner"):
        assert Path(facts[key]).resolve().is_relative_to(purelib), (key, facts[key])
    assert Path(facts["migrations"]) == purelib / "harness" / "db" / "migrations"
    on_path = [p for p in facts["path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert on_path == [], f"the checkout is on sys.path: {on_path}"


def test_bench_with_every_tvm_backend_from_the_installed_package(installed: Installed) -> None:
    installed.run(installed.edgefarm, "examples", "resnet8", "-o", "models")
    out = installed.work / "results.json"
    installed.run(
        installed.edgefarm,
        "bench",
        "models/resnet8.onnx",
        *(arg for backend in BACKENDS for arg in ("-b", backend)),
        "--warmup",
        "1",
        "--min-iterations",
        "3",
        "--min-seconds",
        "0",
        "--json",
        str(out),
        timeout=600,
    )
    documents = json.loads(out.read_text())
    by_backend = {doc["backend"]: doc for doc in documents}
    assert sorted(by_backend) == sorted(BACKENDS)
    for backend, doc in by_backend.items():
        assert doc["status"] == "ok", (backend, doc["error"])
        assert doc["accuracy"]["passed"], (backend, doc["accuracy"])
    # The BYOC builds linked the reference driver compiled from the installed sources.
    assert list((installed.home / "byoc").glob("libedgefarm_nn-*.a"))


@pytest.mark.parametrize(
    "how",
    ["edgefarm up", "edgefarm worker", "docker-compose migrate"],
)
def test_migrations_from_the_installed_package(installed: Installed, how: str) -> None:
    db = installed.work / f"{how.replace(' ', '-')}.db"
    url = f"sqlite:///{db}"
    if how == "edgefarm up":
        installed.run(
            installed.python, "-c", f"from harness.embedded import migrate; migrate({url!r})"
        )
    elif how == "edgefarm worker":
        installed.run(
            installed.python, "-c", f"from workers.cli import ensure_schema; ensure_schema({url!r})"
        )
    else:  # its command: python -m harness.db.migrate, on EDGEFARM_DATABASE_URL
        installed.run(
            installed.python, "-m", "harness.db.migrate", env={"EDGEFARM_DATABASE_URL": url}
        )
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata.tables) | {"alembic_version"} <= tables


def test_the_image_is_built_the_same_way() -> None:
    """No Docker engine here: the Dockerfile builds its wheel from what this module builds from
    and installs it non-editable; docker-compose migrates with the installed package's module."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        name
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for name in line.split()[1:-1]
    }
    assert copied == set(BUILD_INPUTS)
    assert "pip wheel" in dockerfile
    assert "-e " not in dockerfile and "--editable" not in dockerfile
    # The charting library is fetched into the installed package, not copied from a checkout.
    assert "RUN python -m api.web.assets" in dockerfile
    assert "api/web/static/vendor" in (ROOT / ".dockerignore").read_text().split()
    compose = (ROOT / "docker-compose.yml").read_text()
    assert '["python", "-m", "harness.db.migrate", "upgrade", "head"]' in compose


SERVE_PAGES = """
import hashlib, json, sys
from fastapi.testclient import TestClient
from api.main import create_app
from api.web.assets import UPLOT
from harness.config import Settings
from harness.embedded import migrate

url = sys.argv[1]
migrate(url)
settings = Settings(database_url=url, broker_url="memory://", api_token=None)
script = f"/static/vendor/{UPLOT.directory}/uPlot.iife.min.js"
with TestClient(create_app(settings)) as client:
    history = client.get("/history")
    served = client.get(script)
    print(json.dumps({
        "dashboard": client.get("/").status_code,
        "history": history.status_code,
        "loads_uplot": script in history.text,
        "says_how": "python -m api.web.assets" in history.text,
        "served": served.status_code,
        "served_sha256": hashlib.sha256(served.content).hexdigest(),
        "pinned_sha256": UPLOT.files["uPlot.iife.min.js"],
    }))
"""


def test_the_installed_package_serves_the_pages_and_fetches_uplot_from_the_registry(
    installed: Installed,
) -> None:
    """The wheel carries no copy of uPlot: its pages work and say how to install it; the
    command fetches it from the npm registry (verified) into the installed package, once."""
    url = f"sqlite:///{installed.work / 'pages.db'}"
    check = [installed.python, "-m", "api.web.assets", "--check"]
    assert subprocess.run(check, cwd=installed.work, env=installed.env).returncode == 1
    before = json.loads(installed.run(installed.python, "-c", SERVE_PAGES, url).stdout)
    assert (before["dashboard"], before["history"], before["served"]) == (200, 200, 404)
    assert before["says_how"] and not before["loads_uplot"]

    first = installed.run(installed.python, "-m", "api.web.assets", timeout=120).stdout
    assert "installed in" in first
    again = installed.run(installed.python, "-m", "api.web.assets").stdout
    assert "already in" in again  # nothing fetched the second time
    where = Path(installed.run(*check).stdout.split(": ", 1)[1].strip())
    purelib = installed.venv.resolve()
    assert where.resolve().is_relative_to(purelib) and where.parts[-4:-1] == (
        "web",
        "static",
        "vendor",
    )

    after = json.loads(installed.run(installed.python, "-c", SERVE_PAGES, url).stdout)
    assert (after["history"], after["served"]) == (200, 200)
    assert after["loads_uplot"] and not after["says_how"]
    assert after["served_sha256"] == after["pinned_sha256"]
