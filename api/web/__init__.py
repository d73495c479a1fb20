"""The web view of result history: server-rendered pages on the farm's own app.

Pages read through the same ``harness.farm`` queries as the JSON routes; every view's state is
in its URL; every table is also CSV and JSON (``?format=csv&table=NAME``, ``?format=json``).
Charts are drawn in the browser by uPlot (``static/web.js``) from JSON blocks in the page; uPlot
is fetched from the npm registry by the set-up (:mod:`api.web.assets`) and served by the farm,
and everything but the charts works without JavaScript. Jinja2 autoescapes everything a user
named.

The pages' router is :data:`api.web.pages.router`. This package imports none of its modules,
so that ``python -m api.web.assets`` runs a module not yet imported.
"""
