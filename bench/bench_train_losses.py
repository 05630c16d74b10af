"""A training step with TaiLr's token weighting (and with meta-weighting) against plain cross-entropy, same batch.

Run: `PYTHONPATH=src python bench/bench_train_losses.py [--quick] [--steps 20] [--repeats 3]`; the ratios are written
to `bench/results.json`: `tailr_step_vs_ce` (seconds per step with `loss_type: tailr` / with `ce`; target <= 1.05)
and `meta_step_vs_ce` (`sample_weighting: meta`, which adds a look-ahead step and a meta batch: several times a
plain step by construction).

Both trainers are vstar's (`vstar.train.sft.build_trainer`) with the demo recipe's LoRA settings (rank 32 on every
linear layer, batch 16) on the tiny Qwen2.5-VL; `ce` is TRL's own loss through its fused LM head, `tailr` the same
fused head with the weights applied. One collated batch of the demo's seed rows is prepared once and every timed step
is the trainer's `training_step` (forward, loss, backward) plus the optimizer step on it, so the difference is the
loss alone. Steps are timed in CPU seconds (`time.process_time`, one torch thread), which barely moves when other
processes share the cores; the settings alternate and each reports its median step over all its runs.
`--quick` runs a few steps once to check that everything runs; it records nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results import record

from vstar.configs import CycleConfig, parse_configs
from vstar.demo import DEMO_RECIPE, recipe_path, seed_rows, write_seed_dataset
from vstar.train.sft import VStarSFTConfig, build_trainer

SEED_CLIPS = 16
SETTINGS = {
    "ce": {},
    "tailr": {"loss_type": "tailr"},
    "meta": {"sample_weighting": "meta"},
}


def make_trainer(model_dir: Path, data_dir: Path, output_dir: Path, overrides: dict):
    _, config = parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(recipe_path(DEMO_RECIPE))])
    config.model_name_or_path, config.dataset, config.output_dir = str(model_dir), str(data_dir), str(output_dir)
    config.torch_threads, config.disable_tqdm, config.max_steps = 1, True, 1000
    for name, value in overrides.items():
        setattr(config, name, value)
    if config.sample_weighting == "meta":
        config.meta_dataset = str(data_dir)
    trainer = build_trainer(config)
    trainer.create_optimizer_and_scheduler(num_training_steps=config.max_steps)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def timed_steps(trainer, batch, steps: int) -> list[float]:
    """CPU seconds of each of `steps` training steps on `batch`."""
    times = []
    for _ in range(steps):
        start = time.process_time()
        trainer.training_step(trainer.model, dict(batch))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        times.append(time.process_time() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, repeats = (3, 1) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(1)

    from vstar.sources.shapes import ShapesConfig, build_shapes
    from vstar.tasks.base import get_task
    from vstar.testing.tiny_models import build_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_shapes(ShapesConfig(output=str(root / "shapes"), num_train=SEED_CLIPS, num_validation=1, num_test=1))
        model_dir = build_tiny_vlm(root / "model", architecture="qwen2_5_vl")
        data_dir = write_seed_dataset(root / "seed", seed_rows(root / "shapes", SEED_CLIPS, get_task("shapes"), 0))
        trainers = {name: make_trainer(model_dir, data_dir, root / name, o) for name, o in SETTINGS.items()}
        first = trainers["ce"]
        rows = [first.train_dataset[i] for i in range(first.args.per_device_train_batch_size)]
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for trainer in trainers.values():  # warm-up: first calls allocate
            batch = trainer._prepare_inputs(trainer.data_collator(rows))
            timed_steps(trainer, batch, 2)
        for _ in range(repeats):
            for name, trainer in trainers.items():
                batch = trainer._prepare_inputs(trainer.data_collator(rows))
                times[name] += timed_steps(trainer, batch, steps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name}: {value * 1000:.1f} ms CPU per step (median of {len(times[name])})")
    ratios = {
        "tailr_step_vs_ce": round(medians["tailr"] / medians["ce"], 3),
        "meta_step_vs_ce": round(medians["meta"] / medians["ce"], 3),
    }
    print(ratios)
    record(ratios, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
