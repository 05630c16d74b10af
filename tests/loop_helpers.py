"""Settings the loop's tests share: small LoRA training and a one-cycle loop over the small shapes set.

A plain module (not `conftest`): test folders have their own `conftest.py`, and only a uniquely named module
imports the same way from every test file.
"""

from pathlib import Path

SEED_CLIPS = 16
# The architectures the loop tests warm up and run end to end.
WARM_ARCHITECTURES = ("qwen2_5_vl", "qwen2_vl")


def training_config(**overrides):
    """Small, fast LoRA settings for the tiny models."""
    from vstar.train.sft import VStarSFTConfig

    values = {
        "output_dir": "unused",
        "finetuning": "lora",
        "lora_target": "all",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 2e-3,
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "activation_checkpointing": False,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 50,
        "num_frames": 8,
        "seed": 0,
    }
    values.update(overrides)
    return VStarSFTConfig(**values)


def small_cycle_config(run_dir: Path, shapes_dir: Path, **overrides):
    """A one-cycle loop over 24 training clips of the small shapes set, evaluated on 8 test clips."""
    from vstar.configs import CycleConfig

    values = {
        "source_dataset": str(shapes_dir),
        "source_offset": SEED_CLIPS,
        "source_limit": 24,
        "eval_limit": 8,
        "task": "shapes",
        "run_dir": str(run_dir),
        "num_cycles": 1,
        "cycle_init": "previous",
        "generation_batch_size": 8,
        "max_new_tokens": 24,
    }
    values.update(overrides)
    return CycleConfig(**values)
