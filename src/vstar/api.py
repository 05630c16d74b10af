"""The Python entry points behind `import vstar`: build a source, run the loop, evaluate a model.

Each takes the settings the command line takes, as keyword arguments (see docs/python_api.md):

```python
import vstar

source = vstar.build_source("shapes", output="data/shapes", num_train=16, num_validation=0, num_test=8)
history = vstar.run_cycle("recipes/demo/config_shapes_tiny.yaml", source_dataset=str(source),
                          model_name_or_path="runs/demo/warm-start", run_dir="runs/shapes")
```
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _init_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _unknown_settings(unknown: set[str], known: set[str], what: str) -> ValueError:
    from vstar.errors import did_you_mean

    hints = "".join(did_you_mean(name, known) for name in sorted(unknown))
    return ValueError(f"Unknown {what} setting(s) {', '.join(sorted(unknown))}{hints}.")


def build_source(name: str, **settings: Any) -> Path:
    """Build a registered source dataset (what `vstar build NAME --field value ...` does); returns its directory.

    Args:
        name: the source's registered name (`shapes`, `kinetics`, `finediving`, `folder`, `table`, ...).
        **settings: fields of the builder's settings class (`vstar build NAME --help` lists them).
    """
    from vstar.sources import SOURCES, builder_config

    builder = SOURCES.get(name)
    config_class = builder_config(name)
    unknown = set(settings) - _init_fields(config_class)
    if unknown:
        raise _unknown_settings(unknown, _init_fields(config_class), f"`{name}` source")
    return Path(builder(config_class(**settings)))


def cycle_configs(recipe: str | Path | None = None, **settings: Any):
    """The loop's and the training's settings from a recipe YAML and keyword overrides (which win).

    Args:
        recipe: a recipe file holding fields of `CycleConfig` and `VStarSFTConfig` (optional).
        **settings: any field of either; `output_dir` defaults to `<run_dir>/train`.

    Returns:
        `(CycleConfig, VStarSFTConfig)`.
    """
    import yaml

    from vstar.configs import CycleConfig
    from vstar.train.sft import VStarSFTConfig

    values: dict[str, Any] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"Recipe {path} not found.")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe is a mapping of settings, not {type(values).__name__}.")
    values.update(settings)
    cycle_fields, train_fields = _init_fields(CycleConfig), _init_fields(VStarSFTConfig)
    unknown = set(values) - cycle_fields - train_fields
    if unknown:
        raise _unknown_settings(unknown, cycle_fields | train_fields, "cycle or training")
    cycle = CycleConfig(**{k: v for k, v in values.items() if k in cycle_fields})
    train_values = {k: v for k, v in values.items() if k in train_fields and k not in cycle_fields}
    train_values.setdefault("output_dir", str(Path(cycle.run_dir) / "train"))
    return cycle, VStarSFTConfig(**train_values)


def run_cycle(recipe: str | Path | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Run or resume the Video-STaR loop (what `vstar cycle --config RECIPE --field value ...` does).

    Args:
        recipe: a recipe YAML (optional).
        **settings: fields of `CycleConfig` and `VStarSFTConfig`, overriding the recipe.

    Returns:
        The per-cycle metrics (`metrics.json` of the run directory).
    """
    from vstar.cycle import CycleRunner

    return CycleRunner(*cycle_configs(recipe, **settings)).run()


def run_evaluation(
    model: str | Path,
    dataset: str | Path,
    task: str,
    *,
    adapter: str | Path | None = None,
    split: str = "test",
    revision: str | None = None,
    task_options: dict[str, Any] | str | None = None,
    limit: int | None = None,
    seed: int = 0,
    output_dir: str | Path = "vstar-eval",
    **generation: Any,
) -> dict[str, Any]:
    """Evaluate a model (plus an optional adapter) on a split with the task's verifier (what `vstar eval` does).

    Args:
        model: the base model (directory or Hub id).
        dataset: the source dataset (directory or Hub id).
        task: the task whose verifier judges the answers.
        adapter: a LoRA adapter directory on top of `model`.
        split: the held-out split.
        revision: the dataset's Hub revision.
        task_options: the task's options (mapping or JSON).
        limit: evaluate at most this many rows: a seeded sample stratified by the label.
        seed: the seed of that sample.
        output_dir: generation chunks (resumable) and `results.json`.
        **generation: fields of `GenerationSettings` (`batch_size`, `max_new_tokens`, `num_frames`, ...).

    Returns:
        `{"metrics": ..., "predictions": [...], ...}`, also written to `output_dir/results.json`.
    """
    from vstar.evaluate.run import evaluate_split
    from vstar.generate.base import GenerationSettings

    unknown = set(generation) - _init_fields(GenerationSettings)
    if unknown:
        raise _unknown_settings(unknown, _init_fields(GenerationSettings), "generation")
    settings = GenerationSettings(**{"seed": seed, **generation})
    return evaluate_split(
        str(model),
        str(dataset),
        split,
        task,
        settings,
        output_dir,
        adapter=str(adapter) if adapter else None,
        revision=revision,
        task_options=task_options,
        limit=limit,
        subset_seed=seed,
    )
