"""The validation kit the node configuration and the tenant policies share.

``check``: the collector that reports every problem of a policy file at
once, and the small converters its sections use. ``reader``: the same for
the node's TOML. ``values``: the value grammars both accept (sizes, country
codes, tenant ids); host names and URLs are :mod:`edge.http.urls`.

Nothing here imports the rest of edge, so the module that owns a setting
can validate it without an import circle.
"""
