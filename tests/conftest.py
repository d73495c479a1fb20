"""Shared test set-up: an isolated EDGEFARM_HOME for the whole session, and test models."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything reads settings: the whole test session shares one throwaway farm home, so the
# artifact and runner caches are reused across tests but never touch the user's own.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="edgefarm-test-home-"))
os.environ["EDGEFARM_HOME"] = str(_SESSION_HOME)
os.environ.pop("ANDROID_NDK_HOME", None)
os.environ.pop("EDGEFARM_ANDROID_NDK_HOME", None)


@pytest.fixture(scope="session")
def edgefarm_home() -> Path:
    return _SESSION_HOME


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    from harness.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
