"""The Celery broker's URL, shared by the API (which only enqueues) and the workers.

Plain string code: importing this module imports neither celery nor kombu.
"""

from __future__ import annotations

from harness.config import Settings, get_settings


def broker_url(settings: Settings | None = None) -> str:
    """``settings.broker_url``, or the embedded default: kombu's SQLAlchemy transport on
    ``<EDGEFARM_HOME>/broker.db`` (no service needed)."""
    settings = settings or get_settings()
    if settings.broker_url:
        return settings.broker_url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqla+sqlite:///{settings.home / 'broker.db'}"
