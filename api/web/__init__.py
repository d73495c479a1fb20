"""The web view of result history: server-rendered pages on the farm's own app.

Pages read through the same ``harness.farm`` queries as the JSON routes; every view's state is
in its URL; every table is also CSV and JSON (``?format=csv&table=NAME``, ``?format=json``);
charts are SVG drawn on the server, so a page needs no JavaScript (``static/web.js`` only adds
drag-to-zoom on the history chart). Jinja2 autoescapes everything a user named.
"""

from __future__ import annotations

from api.web.pages import router

__all__ = ["router"]
