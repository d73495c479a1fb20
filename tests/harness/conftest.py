"""Fixtures the harness's own tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import get_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An EDGEFARM_HOME of the test's own: its records store and caches start empty."""
    monkeypatch.setenv("EDGEFARM_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()
