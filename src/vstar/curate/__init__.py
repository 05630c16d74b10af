"""Curation (DESIGN.md section 7, Panda-70M): scene splitting of long videos and scoring of candidate captions.

```bash
vstar split --videos raw/ --output data/clips
vstar select --captions data/captions --scorer runs/scorer --output data/selected
```
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it (PEP 562: nothing is imported until it is used).
_EXPORTS = {
    "split_videos": "vstar.curate.split",
    "split_video": "vstar.curate.split",
    "SplitConfig": "vstar.curate.split",
    "get_executor": "vstar.curate.executors",
    "select_captions": "vstar.curate.select",
    "SelectConfig": "vstar.curate.select",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vstar.curate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)
