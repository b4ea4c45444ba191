"""The request pipeline: ``flow.py`` knows the order of the phases; the
other modules each do one phase's work (see flow.py's docstring)."""
from edge.pipeline.flow import Pipeline

__all__ = ["Pipeline"]
