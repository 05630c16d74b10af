"""A training step of vstar's training against a bare TRL `SFTTrainer` on the same data, model and LoRA.

Run: `PYTHONPATH=src python bench/bench_train.py [--quick] [--steps 30] [--repeats 3]`; the ratio is also written
to `bench/results.json` (key `train_step_vs_bare_trl` = vstar seconds per step / bare seconds per step, so lower is
better and 1.10 means vstar is 10% slower).

vstar trains from instruction rows as stored (clip reference + conversation): `vstar.train.sft.train` with a
`VStarSFTConfig` from the demo recipe (LoRA r 32 on every linear layer, batch 16), its video collator (clips decoded
once and kept in an LRU cache, the processor called on every batch, everything but the answer masked) and its own
PEFT wrapping; a clock is added to the trainer it builds, nothing else changes. The bare baseline is what one would
write by hand with everything precomputed: the same tiny Qwen2.5-VL, the same LoRA config passed to
`SFTTrainer(peft_config=...)` of a plain `SFTConfig`, and the very tensors vstar's collator makes for each row,
computed once before training and kept in memory, which a minimal collator only pads and concatenates. Both train on
the demo's seed rows (32 shapes clips, each asked directly and with the hint) with the same seed, batch size and
schedule, so they train alike: the script checks that both log the same loss at every step. The difference per step
is therefore what the collator and the wrapping cost.

Steps are timed from one step's end to the next (collation included), after a few warm-up steps that also fill the
clip cache, with `torch.set_num_threads(1)` and no data loader workers in both, so each run is one busy thread: its
CPU time per step is what an idle machine would show as wall time, and unlike wall time it barely moves when other
processes share the cores. The CPU ratio is recorded and the wall ratio printed beside it; the two settings
alternate, and each reports its median step over all its runs (a step slowed by another process is an outlier).
`--quick` runs a few steps once to check that everything runs; it records nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from results import record
from transformers import PrinterCallback, TrainerCallback

from vstar.configs import CycleConfig, parse_configs
from vstar.demo import DEMO_RECIPE, recipe_path, seed_rows, write_seed_dataset
from vstar.train.sft import VStarSFTConfig, lora_config, train

SEED_CLIPS = 32


class StepClock(TrainerCallback):
    """Wall and CPU time at every step's end, and the logged losses."""

    def __init__(self):
        self.ends: list[tuple[float, float]] = []
        self.losses: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = [(time.perf_counter(), time.process_time())]

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append((time.perf_counter(), time.process_time()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def steps(self, warmup: int) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of every step after the first `warmup` ones."""
        ends = self.ends[warmup:]
        return [(w1 - w0, c1 - c0) for (w0, c0), (w1, c1) in zip(ends, ends[1:])]


def bench_config(model_dir: Path, data_dir: Path, output_dir: Path, steps: int) -> VStarSFTConfig:
    """The demo recipe's training settings for `steps` steps on the seed rows."""
    _, config = parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(recipe_path(DEMO_RECIPE))])
    config.model_name_or_path, config.dataset, config.output_dir = str(model_dir), str(data_dir), str(output_dir)
    config.max_steps, config.logging_steps, config.disable_tqdm, config.torch_threads = steps, 1, True, 1
    return config


def run_vstar(config: VStarSFTConfig) -> StepClock:
    """`vstar.train.sft.train` as the loop calls it, with a clock added to the trainer it builds."""
    from trl import SFTTrainer

    clock = StepClock()

    class ClockedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, callbacks=[clock], **kwargs)
            self.remove_callback(PrinterCallback)  # a log line per step is noise here

    torch.manual_seed(config.seed)
    with mock.patch("trl.SFTTrainer", ClockedSFTTrainer):
        train(config)
    return clock


def pad_collate(rows: Sequence[Mapping[str, torch.Tensor]], pad_id: int):
    """The minimal collator over precomputed rows (the dataset holds only their positions): left-pad the token
    tensors (as the processor does), concatenate the video tensors."""

    def collate(examples: Sequence[Mapping[str, int]]) -> dict[str, torch.Tensor]:
        chosen = [rows[e["row"]] for e in examples]
        length = max(len(r["input_ids"]) for r in chosen)
        batch = {}
        for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("mm_token_type_ids", 0), ("labels", -100)):
            if key in chosen[0]:
                batch[key] = torch.stack(
                    [torch.nn.functional.pad(r[key], (length - len(r[key]), 0), value=fill) for r in chosen]
                )
        for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            if key in chosen[0]:
                batch[key] = torch.cat([r[key] for r in chosen])
        return batch

    return collate


def precompute(config: VStarSFTConfig) -> list[dict[str, torch.Tensor]]:
    """vstar's collator output for every row on its own: the tensors the bare baseline trains on."""
    from transformers import AutoProcessor

    from vstar.train.collator import VideoSFTCollator
    from vstar.train.sft import load_instruction_rows

    collator = VideoSFTCollator(AutoProcessor.from_pretrained(config.model_name_or_path), num_frames=config.num_frames)
    rows = []
    for row in load_instruction_rows(config):
        batch = collator([row])
        per_row = {"input_ids", "attention_mask", "mm_token_type_ids", "labels"}
        rows.append({k: v[0] if k in per_row else v for k, v in batch.items()})
    return rows


def run_bare(config: VStarSFTConfig, rows: list[dict[str, torch.Tensor]]) -> StepClock:
    """Plain `SFTConfig` + `SFTTrainer(peft_config=...)` on precomputed tensors."""
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        activation_checkpointing=config.activation_checkpointing,
        seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=config.use_cpu,
        bf16=config.bf16,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )
    processor = AutoProcessor.from_pretrained(config.model_name_or_path)
    torch.manual_seed(config.seed)
    model = AutoModelForImageTextToText.from_pretrained(config.model_name_or_path, dtype=torch.float32)
    clock = StepClock()
    trainer = SFTTrainer(
        model=model,
        args=args,
        # Positions only: the collator picks the tensors from memory, with no conversion on the way.
        train_dataset=Dataset.from_dict({"row": list(range(len(rows)))}),
        data_collator=pad_collate(rows, processor.tokenizer.pad_token_id),
        processing_class=processor,
        peft_config=lora_config(config),
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return clock


def prepare(root: Path) -> tuple[Path, Path]:
    from vstar.sources.shapes import ShapesConfig, build_shapes
    from vstar.tasks.base import get_task
    from vstar.testing.tiny_models import build_tiny_vlm

    model_dir = build_tiny_vlm(root / "model", seed=0)
    source = build_shapes(
        ShapesConfig(output=str(root / "shapes"), num_train=SEED_CLIPS, num_validation=0, num_test=0, seed=0)
    )
    data_dir = write_seed_dataset(root / "seed", seed_rows(source, SEED_CLIPS, get_task("shapes"), seed=0))
    return model_dir, data_dir


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps after 2 warm-up steps, once, no recording")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (they alternate)")
    args = parser.parse_args(argv)
    steps, warmup, repeats = (3, 2, 1) if args.quick else (args.steps, args.warmup, args.repeats)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="vstar-bench-train-") as tmp:
        root = Path(tmp)
        model_dir, data_dir = prepare(root)
        config = bench_config(model_dir, data_dir, root / "out", warmup + steps)
        rows = precompute(config)
        steps_of: dict[str, list[list[tuple[float, float]]]] = {"vstar": [], "bare": []}
        losses: dict[str, list[float]] = {}
        for _ in range(repeats):
            for name in steps_of:
                clock = run_vstar(config) if name == "vstar" else run_bare(config, rows)
                steps_of[name].append(clock.steps(warmup))
                losses[name] = clock.losses

    drift = max(abs(a - b) / abs(b) for a, b in zip(losses["vstar"], losses["bare"]))
    if len(losses["vstar"]) != len(losses["bare"]) or drift > 1e-3:
        raise SystemExit(
            f"the runs did not train alike (losses vstar {losses['vstar'][:5]}..., bare {losses['bare'][:5]}...): "
            "they did not see the same batches"
        )
    # The median step of all runs: a step slowed by another process is an outlier, not part of the cost.
    wall = {name: statistics.median(w for run in runs for w, _ in run) for name, runs in steps_of.items()}
    cpu = {name: statistics.median(c for run in runs for _, c in run) for name, runs in steps_of.items()}
    ratio = cpu["vstar"] / cpu["bare"]
    print(
        f"LoRA SFT of a tiny Qwen2.5-VL, batch {config.per_device_train_batch_size}, {steps} timed steps after "
        f"{warmup} warm-up steps in each of {repeats} runs, torch on 1 thread, median step (the same loss at every "
        f"step in both, within {drift:.0e})"
    )
    print(f"{'setting':<48} {'CPU s/step':>10} {'wall s/step':>11}  per run (CPU)")
    labels = {
        "vstar": "vstar (train(): collator, clip cache, wrapping)",
        "bare": "bare TRL SFTTrainer (precomputed tensors)",
    }
    for name, label in labels.items():
        runs = ", ".join(f"{statistics.median(c for _, c in run):.4f}" for run in steps_of[name])
        print(f"{label:<48} {cpu[name]:>10.4f} {wall[name]:>11.4f}  {runs}")
    print(
        f"vstar / bare seconds per step: {ratio:.3f} CPU, {wall['vstar'] / wall['bare']:.3f} wall (lower is better; "
        "1.10 = vstar 10% slower; the CPU ratio is recorded)"
    )
    results = {"train_step_vs_bare_trl": round(ratio, 3)}
    return record(results, quick=args.quick)


if __name__ == "__main__":
    main()
