"""`vstar push RUN_DIR`: publish a run made offline, every cycle in order, each version tagged `cycle-<k>`.

```bash
vstar push runs/demo --dataset-repo my-org/shapes-star-data --model-repo my-org/shapes-star [--hub-private]
```
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vstar.configs import CycleConfig, parse_configs
from vstar.train.sft import VStarSFTConfig

logger = logging.getLogger(__name__)


@dataclass
class PushConfig:
    """Where a local run goes."""

    dataset_repo: str = field(default="", metadata={"help": "Dataset repo for the cycles' instruction data."})
    model_repo: str = field(default="", metadata={"help": "Model repo for the cycles' adapters."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repos as private."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN / stored login)."})
    embed_videos: bool = field(default=True, metadata={"help": "Embed video bytes in the pushed datasets."})
    push_merged: bool = field(default=False, metadata={"help": "Also push merged weights to MODEL_REPO-merged."})


def push_run(run_dir: str | Path, push: PushConfig) -> list[dict]:
    """Push every finished cycle of `run_dir`; already pushed cycles are skipped (and re-tagged if needed)."""
    from vstar.cycle import CycleRunner

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a vstar run directory (no config.yaml).")
    cycle_config, train_config = parse_configs(
        (CycleConfig, VStarSFTConfig), ["--config", str(run_dir / "config.yaml")]
    )
    cycle_config.run_dir = str(run_dir)
    cycle_config.hub_dataset_repo, cycle_config.hub_model_repo = push.dataset_repo, push.model_repo
    cycle_config.hub_private, cycle_config.embed_videos = push.hub_private, push.embed_videos
    cycle_config.push_merged = push.push_merged
    train_config.hub_token = push.hub_token
    runner = CycleRunner(cycle_config, train_config)
    history = runner.history()
    pushed = []
    for entry in history:
        cycle = entry["cycle"]
        if cycle == 0 or not (run_dir / f"cycle-{cycle}" / "model").exists():
            continue
        runner.publish(cycle, entry, history)
        pushed.append({"cycle": cycle, **runner.state.result(runner.push_stage(cycle))})
    if not pushed:
        raise ValueError(f"{run_dir} has no finished cycle to push.")
    return pushed


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(argv or [])
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: vstar push RUN_DIR --dataset_repo ORG/NAME --model_repo ORG/NAME")
    (push,) = parse_configs((PushConfig,), argv[1:])
    pushed = push_run(argv[0], push)
    for item in pushed:
        logger.info("cycle-%d: dataset %s, model %s", item["cycle"], item["dataset_commit"], item["model_commit"])
    return pushed
