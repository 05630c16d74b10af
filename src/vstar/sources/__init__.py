"""Source builders: one per labeled video collection, each writing a source dataset (DESIGN.md section 3)."""

from vstar.sources import shapes  # noqa: F401  (registers the builder)
from vstar.sources.base import SOURCES, write_source_dataset


def builder_config(name: str) -> type:
    """The settings dataclass of a registered builder."""
    return SOURCES.get(name).config_class


__all__ = ["SOURCES", "builder_config", "write_source_dataset"]
