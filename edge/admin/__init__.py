"""The admin HTTP API of a node: health, readiness, metrics, tenants'
policies, purges; bearer tokens known by their hash, an audit trail, and a
control socket per worker so that changes reach every worker of a node
before they are acknowledged.

``app.py`` holds the routes, ``server.py`` the listener, ``auth.py``
tokens and the limiter of failed attempts, ``hosts.py`` the Host names it
answers to,
``audit.py`` the audit trail, ``errors.py`` the JSON error shape,
``store.py`` atomic policy files, ``control.py`` the workers' fan-out,
``openapi.py`` the document, ``client.py`` and ``commands.py`` the CLI side
(``edge purge``, ``edge policy``, ``edge token``).
"""
