"""edgefarm's HTTP API (FastAPI): JSON routes under /api/v1. Imports harness, never workers."""
