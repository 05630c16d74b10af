"""Tasks: one per kind of label (question pool, label text, verification, scoring).

Importing this package registers the built-in tasks.

```python
from vstar.tasks import get_task
task = get_task("action_recognition", classes=["abseiling", "rock climbing"])
```
"""

from vstar.tasks import (  # noqa: F401, E402  (registers the tasks)
    action_quality,
    action_recognition,
    generic,
    multiple_choice,
    shapes,  # noqa: F401, E402
)
from vstar.tasks.base import TASKS, Prompts, Task, get_task, load_task

__all__ = ["TASKS", "Prompts", "Task", "get_task", "load_task"]
