"""The operator's dashboard at ``/admin``: server-rendered pages (Jinja2), charts drawn in the
browser from the admin JSON, admin-key login with a signed session cookie. Everything it needs
ships in this package (templates/, static/): no CDN, works offline.

The router lives in :mod:`moeplane.api.dashboard.routes` (imported by the app, not here, so the
admin JSON routes can import this package's views without a cycle).
"""
