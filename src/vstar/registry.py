"""Named registries for the parts users extend: sources, tasks, generation backends.

```python
from vstar.registry import Registry

TASKS = Registry("task")

@TASKS.register("my_task")
class MyTask: ...

TASKS.get("my_task")
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from vstar.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to classes or factories, filled by a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"A {self.kind} named {name!r} is already registered ({self._entries[name]!r}).")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as `name`.

        Raises:
            UnknownNameError: (a `KeyError`) naming the known entries and the closest ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}{did_you_mean(str(name), self._entries)}. Known {self.kind}s: {known}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
