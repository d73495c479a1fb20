"""The farm's Celery tasks, by area: jobs (start, finish), runs, maintenance (the reaper)."""
