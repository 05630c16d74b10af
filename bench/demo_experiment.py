"""The shared start of the experiments on the shapes demo (`experiment_noise.py`, `experiment_rl.py`): flags, the
demo's source, base model, seed set and warm start (each made once, as `vstar demo` makes them), and the loop's
configs pointed at them."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vstar.configs import CycleConfig, parse_configs
from vstar.demo import DEMO_RECIPE, DemoConfig, prepare_demo, recipe_path
from vstar.train.sft import VStarSFTConfig

FULL_SIZES = {"train": 1000, "test": 200, "seed": 100, "warm_steps": 910}
QUICK_SIZES = {"train": 40, "test": 8, "seed": 8, "warm_steps": 30}


def experiment_parser(description: str, output_dir: str) -> argparse.ArgumentParser:
    """`--output-dir`, `--quick` and `--seed`, which every demo experiment takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output-dir", default=output_dir)
    parser.add_argument("--quick", action="store_true", help="a small run to check that everything works")
    parser.add_argument("--seed", type=int, default=0)
    return parser


@dataclass
class DemoExperiment:
    """What an experiment starts from: the run folder, the sizes, the loop's configs (the demo recipe, pointed at
    the prepared source after the seed rows, starting from the warm start) and the seconds the setup took."""

    out: Path
    sizes: dict
    cycle_config: CycleConfig
    train_config: VStarSFTConfig
    started: float
    setup_seconds: float

    @property
    def warm_start(self) -> Path:
        return self.out / "warm-start"


def start_demo_experiment(args: argparse.Namespace, run_name: str) -> DemoExperiment:
    """Prepare the demo under `args.output_dir` (each part once) and the configs of a loop run in `run_name`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    cycle_config, train_config = parse_configs(
        (CycleConfig, VStarSFTConfig), ["--config", str(recipe_path(DEMO_RECIPE))]
    )
    train_config.torch_threads, train_config.disable_tqdm, train_config.seed = 1, True, args.seed
    demo = DemoConfig(
        output_dir=str(out), num_train=sizes["train"], num_test=sizes["test"], seed_size=sizes["seed"],
        warm_start_steps=sizes["warm_steps"], seed=args.seed,
    )  # fmt: skip
    prepare_demo(demo, train_config)
    setup_seconds = time.perf_counter() - started

    cycle_config.source_dataset, cycle_config.source_offset = str(out / "source"), sizes["seed"]
    cycle_config.run_dir, cycle_config.control_dataset = str(out / run_name), None
    train_config.model_name_or_path = str(out / "warm-start")
    if args.quick:
        cycle_config.eval_limit, cycle_config.generation_batch_size = sizes["test"], 8
    return DemoExperiment(out, sizes, cycle_config, train_config, started, setup_seconds)
