"""The app's start-up: what it made is kept out of the garbage collector's full passes
(api.main.freeze_start_up), once per process."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app, freeze_start_up
from harness.config import Settings


def test_start_up_freezes_what_it_made_once(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path / "home", database_url=None, api_token=None))
    with TestClient(app):  # its lifespan has started
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules and the app, at least
        made_since = [[k] for k in range(1000)]  # objects the collector tracks
        freeze_start_up()  # again: nothing more is frozen (frozen objects may be freed)
        assert gc.get_freeze_count() < frozen + len(made_since)
