"""One module per section of a tenant policy: its dataclass (immutable,
defaults in force when the section is left out), its parser (JSON data ->
the dataclass, every problem reported to an :class:`edge.schema.check.Check`)
and its serialiser (the dataclass -> the effective policy's data, every
default spelled out).

:mod:`edge.policy.parse` puts them together; the filters import their
settings from here. Nothing here imports a filter, the model or the parser.
"""
