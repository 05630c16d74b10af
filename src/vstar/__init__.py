"""vstar: Video-STaR on the Hugging Face stack.

Turns labeled video datasets into verified video instruction data and better video language models:
a model answers label-bearing questions step by step, answers whose conclusion matches the label are kept,
failures are retried with the label as a hint, and a LoRA finetune on the kept data gives the next model.

The main entry points are attributes of the package, imported on first use so `import vstar` stays fast
(docs/python_api.md):

```python
import vstar

source = vstar.build_source("shapes", output="data/shapes")
task = vstar.load_task("shapes")
history = vstar.run_cycle(
    "recipes/demo/config_shapes_tiny.yaml", source_dataset=str(source), model_name_or_path="runs/demo/warm-start"
)
results = vstar.run_evaluation("runs/demo/warm-start", source, "shapes", adapter="runs/shapes/cycle-3/model")
vstar.push_run("runs/shapes", vstar.PushConfig(dataset_repo="me/shapes-star-data", model_repo="me/shapes-star"))
```

The function is `run_evaluation`, not `evaluate`: `vstar.evaluate` is the evaluation subpackage.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (PEP 562: nothing below is imported until it is used).
_EXPORTS = {
    # run the loop
    "run_cycle": "vstar.api",
    "cycle_configs": "vstar.api",
    "CycleRunner": "vstar.cycle",
    "CycleConfig": "vstar.configs",
    "VStarSFTConfig": "vstar.train.sft",
    # reinforcement learning from the task verifiers
    "train_grpo": "vstar.train.grpo",
    "VStarGRPOConfig": "vstar.train.grpo",
    "REWARDS": "vstar.train.rewards",
    # the caption flywheel
    "run_flywheel": "vstar.flywheel",
    "FlywheelConfig": "vstar.flywheel",
    # build a source
    "build_source": "vstar.api",
    "SOURCES": "vstar.sources",
    # get a task
    "load_task": "vstar.tasks.base",
    "get_task": "vstar.tasks.base",
    "TASKS": "vstar.tasks.base",
    "Task": "vstar.tasks.base",
    # evaluate
    "run_evaluation": "vstar.api",
    "evaluate_model": "vstar.evaluate.run",
    "get_backend": "vstar.generate.base",
    "GenerationSettings": "vstar.generate.base",
    # publish
    "HubPublisher": "vstar.hub",
    "push_run": "vstar.push",
    "PushConfig": "vstar.push",
    # lineage
    "model_revision": "vstar.lineage",
    "dataset_revision": "vstar.lineage",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vstar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
