"""Shared test set-up: an isolated EDGEFARM_HOME for the whole session, and test models."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import _default_home

# The user's Android NDK and farm home, remembered before they are hidden: the tests marked
# `ndk` (the real Android build) get the NDK back and look for the apache/tvm checkout where
# harness/runner/ANDROID.md puts it (<the user's EDGEFARM_HOME>/tvm-source); every other test
# runs as on a machine without an NDK.
NDK_VARIABLES = ("ANDROID_NDK_HOME", "EDGEFARM_ANDROID_NDK_HOME")
_USER_NDK = {name: value for name in NDK_VARIABLES if (value := os.environ.pop(name, ""))}
_USER_HOME = Path(os.environ.get("EDGEFARM_HOME") or _default_home())

# Before anything reads settings: the whole test session shares one throwaway farm home, so the
# artifact and runner caches are reused across tests but never touch the user's own.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="edgefarm-test-home-"))
os.environ["EDGEFARM_HOME"] = str(_SESSION_HOME)
atexit.register(shutil.rmtree, _SESSION_HOME, True)
# One artifact and runner cache for the whole run, shared by pytest-xdist's processes (they
# inherit it from the process that starts them): each test model is compiled once, not once
# per process. The cache takes concurrent builders (a lock per key, atomic renames).
if "EDGEFARM_TEST_CACHE" not in os.environ:
    os.environ["EDGEFARM_TEST_CACHE"] = tempfile.mkdtemp(prefix="edgefarm-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EDGEFARM_TEST_CACHE"], True)
os.environ["EDGEFARM_CACHE_DIR"] = os.environ["EDGEFARM_TEST_CACHE"]

# Under pytest-xdist (EDGEFARM_TEST_PROCESSES=2 scripts/test runs two processes), tests that must
# not share the machine with each other run in one process, one after another:
# - "farm": every test that runs a whole farm of real worker processes and emulated phones
#   and waits on their timeouts (the worker tests share one named database and Redis db 5;
#   the embedded farms, the chaos soak, the nightly loop and the web pages' farm each start
#   theirs). Two of them at once on two cores time each other out.
# - "api-db": the API tests, which share their session database.
# Everything else (TVM builds, the runner, the CLI) is handed out a module at a time to whichever
# process is free, at a lower CPU priority, so that the farm tests' timeouts measure their farm,
# not the neighbour's builds.
# The groups are applied by our own scheduler (pytest_xdist_make_scheduler below), from each
# test's path. xdist's own loadgroup cannot be used: it marks a group by rewriting
# item._nodeid, which pytest 9.2 no longer reads (nodeid comes from item._id), so its groups
# silently never applied.
_FARM_PATHS = ("workers", "web", "test_embedded.py", "test_chaos.py", "test_nightly.py")
_SERIAL_GROUPS = {**dict.fromkeys(_FARM_PATHS, "farm"), "api": "api-db"}
# Niceness of the tests outside the farm group while farm tests run beside them (xdist only).
_NEIGHBOUR_NICENESS = 5
_TESTS_DIR = Path(__file__).parent


def _group_of_parts(parts: tuple[str, ...]) -> str | None:
    return _SERIAL_GROUPS.get(parts[0]) if parts else None


def _group_of(item: pytest.Item) -> str | None:
    return _group_of_parts(item.path.relative_to(_TESTS_DIR).parts)


def work_unit_of(nodeid: str, tests_prefix: str) -> str:
    """The unit of work a test is handed out in: its serial group, else its module. ``nodeid``
    is relative to the rootdir; ``tests_prefix`` is this directory relative to it (``tests/``)."""
    module = nodeid.split("::", 1)[0]
    parts = tuple(module.removeprefix(tests_prefix).split("/"))
    return _group_of_parts(parts) or module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Module scheduling (xdist's loadscope, biggest units first) with the serial groups above
    as single units, so each group runs in one process."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") not in ("load", "loadscope", "loadgroup", "loadfile"):
        return None  # --dist each / worksteal: xdist's own
    prefix = _TESTS_DIR.relative_to(config.rootpath).as_posix() + "/"

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit_of(nodeid, prefix)

    return GroupScheduling(config, log)


@pytest.fixture(autouse=True)
def _cpu_priority(request: pytest.FixtureRequest) -> None:
    """Under xdist: farm tests at the normal priority, the rest below it (inherited by the
    processes they start). Lowering it back needs root, as CI has; elsewhere a process that
    once ran a neighbour stays lowered, which costs time, never a result."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    wanted = 0 if _group_of(request.node) == "farm" else _NEIGHBOUR_NICENESS
    if os.getpriority(os.PRIO_PROCESS, 0) != wanted:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, wanted)


@pytest.fixture(autouse=True)
def _farm_tests_one_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a farm test that starts while another runs in a second process: the check that
    the groups above are applied (they once silently were not, and worker tests flushed each
    other's Redis database). The lock file sits in the run's shared cache directory."""
    if _group_of(request.node) != "farm":
        yield
        return
    import fcntl

    with open(Path(os.environ["EDGEFARM_TEST_CACHE"]) / "farm-tests.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(
                "another farm test is running in a second process: the xdist groups "
                "in tests/conftest.py were not applied"
            )
        yield


@pytest.fixture(scope="session")
def edgefarm_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def user_tvm_source() -> Path:
    """Where the user keeps the apache/tvm checkout the Android build needs."""
    return _USER_HOME / "tvm-source"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
def _fresh_settings(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    from harness.config import get_settings

    if request.node.get_closest_marker("ndk") is not None:
        for name, value in _USER_NDK.items():
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
