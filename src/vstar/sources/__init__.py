"""Source builders: one per labeled video collection, each writing a source dataset (DESIGN.md section 3).

```bash
vstar build kinetics --annotations train.csv --videos clips/ --output data/k700
```
"""

from vstar.sources import finediving, folder, kinetics, llava, shapes, table  # noqa: F401  (register the builders)
from vstar.sources.base import SOURCES, write_source_dataset


def builder_config(name: str) -> type:
    """The settings dataclass of a registered builder."""
    return SOURCES.get(name).config_class


__all__ = ["SOURCES", "builder_config", "write_source_dataset"]
