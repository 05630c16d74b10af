"""`vstar eval`: evaluate a model (and optional adapter) on a held-out split with a task's verifier.

```bash
vstar eval --model runs/demo/warm-start --adapter runs/demo/cycle-3/model --dataset runs/demo/source \
    --split test --task shapes --output results.json
```
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vstar.configs import EvaluationDecoding, parse_configs
from vstar.distributed import is_main_process
from vstar.generate.base import GenerationSettings

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig(EvaluationDecoding):
    """What to evaluate and where to write the results."""

    model: str = field(default="", metadata={"help": "Base model (directory or Hub id)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter (directory or Hub id[@revision])."})
    dataset: str = field(default="", metadata={"help": "Source dataset (directory or Hub id[@revision])."})
    split: str = field(default="test", metadata={"help": "Held-out split."})
    task: str = field(default="action_recognition", metadata={"help": "Task whose verifier judges the answers."})
    task_options: dict | str | None = field(default=None, metadata={"help": "Task options (mapping or JSON)."})
    output: str = field(default="results.json", metadata={"help": "Where results.json is written."})
    limit: int | None = field(
        default=None, metadata={"help": "Evaluate at most this many rows: a seeded sample stratified by the label."}
    )
    subset_seed: int = field(default=0, metadata={"help": "Seed of the `limit` sample."})


def _split_revision(ref: str | None) -> tuple[str | None, str | None]:
    if ref and "@" in ref and not Path(ref).exists():
        name, revision = ref.rsplit("@", 1)
        return name, revision
    return ref, None


def main(argv: list[str] | None = None) -> dict:
    from vstar.evaluate.run import evaluate_split

    config, settings = parse_configs((EvalConfig, GenerationSettings), argv)
    if settings.temperature != config.eval_temperature:
        logger.info(
            "Evaluating with eval_temperature %s; temperature %s is the generation passes' setting.",
            config.eval_temperature,
            settings.temperature,
        )
    settings = config.evaluation_settings(settings)
    dataset_name, dataset_revision = _split_revision(config.dataset)
    adapter, adapter_revision = _split_revision(config.adapter)
    if adapter_revision:
        from huggingface_hub import snapshot_download

        adapter = snapshot_download(adapter, revision=adapter_revision)
    output = Path(config.output)
    work_dir = output.with_suffix(".generations")
    results = evaluate_split(
        config.model,
        dataset_name,
        config.split,
        config.task,
        settings,
        work_dir,
        adapter=adapter,
        revision=dataset_revision,
        task_options=config.task_options,
        limit=config.limit,
        subset_seed=config.subset_seed,
        record_dir=output.parent,
        description={
            "model": config.model,
            "adapter": config.adapter,
            "dataset": config.dataset,
            "split": config.split,
        },
    )
    if is_main_process():  # under torchrun every process answered its share; the main one wrote the results
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work_dir / "results.json", output)
        print(json.dumps(results["metrics"], indent=2))
    return results
