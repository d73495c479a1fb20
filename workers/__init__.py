"""edgefarm's workers: the Celery app, its tasks (start and finish jobs, runs, the reaper) and
the worker host's entry point. Imports ``harness``, never ``api``."""
