"""Shared test set-up: an isolated EDGEFARM_HOME for the whole session, and test models."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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

# Under pytest-xdist (scripts/test runs two processes), the tests that share one named
# database and Redis database run in one process, one after another: the worker tests
# (edgefarm_workers_test, Redis db 5) and the API tests (their session database).
_SERIAL_GROUPS = {"workers": "farm-db", "api": "api-db"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts
        group = _SERIAL_GROUPS.get(parts[0]) if len(parts) > 1 else None
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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
