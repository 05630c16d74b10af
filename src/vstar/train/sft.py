"""Supervised finetuning of a video LLM on an instruction dataset: TRL `SFTTrainer` + PEFT LoRA + video collator.

```bash
accelerate launch --config_file recipes/accelerate_configs/cpu.yaml -m vstar.cli train \
    --config recipes/demo/config_shapes_tiny.yaml --dataset runs/demo/cycle-1/dataset --output_dir /tmp/model
```
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig

from vstar.train.collator import VideoSFTCollator

logger = logging.getLogger(__name__)

# Linear layers of the language model in Qwen2/2.5/3-VL, LLaVA-OneVision, SmolVLM2 and Video-LLaVA checkpoints.
LANGUAGE_LINEAR = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
LORA_TARGETS = {"language": LANGUAGE_LINEAR, "all": "all-linear"}


@dataclass
class VStarSFTConfig(SFTConfig):
    """Training settings: everything `trl.SFTConfig` has, plus the model, data and finetuning method."""

    model_name_or_path: str = field(default="", metadata={"help": "Base model (Hub id or local directory)."})
    dataset: str = field(default="", metadata={"help": "Instruction dataset: a directory or a Hub repo id."})
    dataset_config: str = field(default="default", metadata={"help": "Dataset config holding the accepted rows."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision (branch, tag, sha)."})
    drop_rationalized: bool = field(
        default=False, metadata={"help": "Train only on direct answers (the paper's choice for the final model)."}
    )
    finetuning: str = field(default="lora", metadata={"help": "`lora` or `full`."})
    lora_target: str = field(
        default="language",
        metadata={
            "help": "`language` (the language model's linear layers), `all` (also the vision tower), or a regex."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full and saved with the adapter (e.g. a random vision `merger`)."},
    )
    init_adapter: str | None = field(
        default=None, metadata={"help": "Continue training this adapter instead of starting a new one."}
    )
    num_frames: int | None = field(default=8, metadata={"help": "Frames sampled per clip."})
    video_fps: float | None = field(default=None, metadata={"help": "Sample this many frames per second instead."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for CPU runs."})
    clip_cache_mb: int = field(
        default=1024,
        metadata={"help": "Memory for decoded clips kept between epochs, per process (each DataLoader worker)."},
    )

    # TRL defaults the deprecated alias to True, so every config that leaves it alone warns under transformers 5;
    # unset here, it still works when given, and checkpointing stays on by default (TRL's choice) in __post_init__.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (transformers 5)."}
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        if not torch.cuda.is_available():
            self.use_cpu, self.bf16, self.fp16 = True, False, False
        # Video rows must reach the collator whole; the collator tokenises and truncation would cut video tokens.
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self.max_length = None
        if self.video_fps is not None:
            self.num_frames = None
        super().__post_init__()


def lora_config(config: VStarSFTConfig):
    from peft import LoraConfig

    target = LORA_TARGETS.get(config.lora_target, config.lora_target)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        modules_to_save=config.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


def load_model_for_training(config: VStarSFTConfig):
    """The base model, wrapped for LoRA (new or continued adapter) unless `finetuning == "full"`."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(config.model_name_or_path, dtype=dtype)
    if config.finetuning == "full":
        return model
    if config.finetuning != "lora":
        raise ValueError(f"finetuning must be `lora` or `full`, not {config.finetuning!r}.")
    if config.init_adapter:
        return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    return get_peft_model(model, lora_config(config))


def load_instruction_rows(config: VStarSFTConfig):
    from vstar.io import load_split

    dataset = load_split(config.dataset, config.dataset_split, config.dataset_config, config.dataset_revision)
    if config.drop_rationalized and "rationalized" in dataset.column_names:
        dataset = dataset.filter(lambda rationalized: not rationalized, input_columns="rationalized")
    if len(dataset) == 0:
        raise ValueError(f"The dataset {config.dataset} ({config.dataset_config}/{config.dataset_split}) is empty.")
    return dataset


# A checkpoint's weights: safetensors or bin, whole or sharded (with an index), of an adapter or a model; FSDP's
# sharded state and DeepSpeed's own folder hold them too.
CHECKPOINT_WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
CHECKPOINT_WEIGHT_DIRS = ("pytorch_model_fsdp_*", "global_step*")
CHECKPOINT_OPTIMIZER = ("optimizer.pt", "optimizer.bin")
CHECKPOINT_OPTIMIZER_DIRS = ("optimizer_0", "global_step*")
TRAIN_SUMMARY = "train_summary.json"
REMOVING_PREFIX = ".removing-"


def _checkpoint_step(path: Path) -> int | None:
    step = path.name.removeprefix("checkpoint-")
    return int(step) if path.name.startswith("checkpoint-") and step.isdigit() and path.is_dir() else None


def _has_weights(checkpoint: Path) -> bool:
    for name in CHECKPOINT_WEIGHTS:
        path = checkpoint / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return True
        try:  # a sharded checkpoint is whole only with every shard its index names
            shards = set(json.loads(path.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if all((checkpoint / shard).is_file() for shard in shards):
            return True
    return any(d.is_dir() for pattern in CHECKPOINT_WEIGHT_DIRS for d in checkpoint.glob(pattern))


def incomplete_reason(checkpoint: str | Path, save_only_model: bool = False) -> str | None:
    """Why a `checkpoint-*` folder cannot be resumed from, or `None` when it is complete.

    The Trainer writes the weights, then the optimizer, scheduler and RNG states, and `trainer_state.json` last;
    removing a folder (its own rotation, or the cleanup after training) deletes files in any order. So a folder
    is complete only with a readable `trainer_state.json`, its weights and, unless the run saves only the model,
    its optimizer state.

    Args:
        checkpoint: the checkpoint folder.
        save_only_model: the run saves no optimizer state (`save_only_model: true`).
    """
    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    if not _has_weights(checkpoint):
        return "no weights"
    if not save_only_model and not (
        any((checkpoint / name).is_file() for name in CHECKPOINT_OPTIMIZER)
        or any(d.is_dir() for pattern in CHECKPOINT_OPTIMIZER_DIRS for d in checkpoint.glob(pattern))
    ):
        return "no optimizer state"
    return None


def remove_dir(path: str | Path) -> None:
    """Delete a folder so that a kill at any instant leaves it either whole under its name or gone from it.

    The folder is first renamed to a hidden `.removing-*` name (atomic), then deleted; what a kill during the
    deletion leaves is deleted by the next call for the same path (or by `remove_incomplete_checkpoints`).
    """
    path = Path(path)
    doomed = path.with_name(f"{REMOVING_PREFIX}{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)  # left by a kill during an earlier removal
    if not path.exists():
        return
    path.rename(doomed)
    shutil.rmtree(doomed)


def remove_incomplete_checkpoints(output_dir: str | Path, save_only_model: bool = False) -> list[str]:
    """Delete the `checkpoint-*` folders of `output_dir` that a kill left incomplete; returns their names.

    Args:
        output_dir: the training output directory.
        save_only_model: the run saves no optimizer state.
    """
    output_dir = Path(output_dir)
    removed = []
    for leftover in output_dir.glob(f"{REMOVING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for checkpoint in output_dir.glob("checkpoint-*"):
        if _checkpoint_step(checkpoint) is None:
            continue
        reason = incomplete_reason(checkpoint, save_only_model)
        if reason is not None:
            logger.warning("Removing %s (%s): the run was stopped while writing or deleting it.", checkpoint, reason)
            remove_dir(checkpoint)
            removed.append(checkpoint.name)
    return removed


def latest_checkpoint(
    output_dir: str | Path, resume_from_checkpoint: str | None, save_only_model: bool = False
) -> str | None:
    """The checkpoint to resume from: a given path, or with `last` the newest complete `checkpoint-*` in `output_dir`.

    Args:
        output_dir: the training output directory.
        resume_from_checkpoint: `last`, a checkpoint path (returned as it is), or `None`.
        save_only_model: the run saves no optimizer state (see `incomplete_reason`).
    """
    if resume_from_checkpoint != "last":
        return resume_from_checkpoint
    steps = {d: _checkpoint_step(d) for d in Path(output_dir).glob("checkpoint-*")}
    for checkpoint in sorted((d for d, step in steps.items() if step is not None), key=steps.get, reverse=True):
        reason = incomplete_reason(checkpoint, save_only_model)
        if reason is not None:
            logger.warning("Skipping %s (%s): the run stopped while writing or deleting it.", checkpoint, reason)
            continue
        return str(checkpoint)
    return None


def read_train_summary(output_dir: str | Path) -> dict[str, Any] | None:
    """The summary `train` writes last into `output_dir` (so the final model there is whole), or `None`."""
    try:
        summary = json.loads((Path(output_dir) / TRAIN_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def training_identity(config: VStarSFTConfig) -> dict[str, Any]:
    """What a finished model was trained from and how: a summary whose identity differs is another training's."""
    return {
        "model_name_or_path": config.model_name_or_path,
        "init_adapter": config.init_adapter,
        "dataset": config.dataset,
        "finetuning": config.finetuning,
        "learning_rate": config.learning_rate,
        "max_steps": config.max_steps,
        "num_train_epochs": config.num_train_epochs,
        "seed": config.seed,
    }


def train(config: VStarSFTConfig, train_dataset=None) -> dict[str, Any]:
    """Finetune and save the adapter (or full model) with its processor to `config.output_dir`.

    Args:
        config: the training settings.
        train_dataset: rows to train on; loaded from `config.dataset` when not given.

    Returns:
        `{"output_dir", "train_loss", "global_step", "num_rows", "resumed_from", "trained"}` (also written to
        `output_dir/train_summary.json`, last).
    """
    from transformers import AutoProcessor, set_seed
    from trl import SFTTrainer

    from vstar.distributed import is_main_process

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    # Seed before anything draws random numbers: the LoRA weights are initialised when the adapter is created,
    # before the Trainer seeds, so without this two runs with one seed start from different adapters.
    set_seed(config.seed)
    processor = AutoProcessor.from_pretrained(config.model_name_or_path)
    dataset = train_dataset if train_dataset is not None else load_instruction_rows(config)
    model = load_model_for_training(config)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        data_collator=VideoSFTCollator(
            processor, num_frames=config.num_frames, fps=config.video_fps, cache_bytes=config.clip_cache_mb << 20
        ),
        processing_class=processor,
    )
    if config.resume_from_checkpoint == "last" and is_main_process():
        # Every process then picks the same newest complete checkpoint, whether or not this has finished.
        remove_incomplete_checkpoints(config.output_dir, config.save_only_model)
    checkpoint = latest_checkpoint(config.output_dir, config.resume_from_checkpoint, config.save_only_model)
    if checkpoint:
        logger.info("Resuming training from %s", Path(_final_name(config.output_dir)) / Path(checkpoint).name)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    output_dir = Path(config.output_dir)
    trainer.save_model(str(output_dir))  # every process calls it (ZeRO-3 / FSDP gather); the main one writes
    summary = {
        "output_dir": str(output_dir),
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "num_rows": len(dataset),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "trained": training_identity(config),
    }
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        # Written last and atomically: its presence says the final model in `output_dir` is whole.
        tmp = output_dir / f".{TRAIN_SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(output_dir / TRAIN_SUMMARY)
    logger.info(
        "Trained %d steps on %d rows, loss %.4f -> %s",
        summary["global_step"],
        len(dataset),
        summary["train_loss"],
        _final_name(output_dir),
    )
    return summary


def _final_name(output_dir: str | Path) -> str:
    # The loop trains into `<dir>.partial` and renames it when the stage is done: say where the model will be.
    return str(output_dir).removesuffix(".partial")


def merge_adapter(
    base_model: str, adapter_dir: str | Path, output_dir: str | Path, processor: str | None = None
) -> Path:
    """Write the base model with the adapter merged into its weights (plus the processor) to `output_dir`.

    The weights keep the checkpoint's dtype (a bf16 7B model stays 15 GB, not 30 GB in fp32).

    Args:
        base_model: the base model (directory or Hub id).
        adapter_dir: the PEFT adapter directory.
        output_dir: where the merged model goes.
        processor: the processor saved with it (default: the adapter directory's).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    output_dir = Path(output_dir)
    base = AutoModelForImageTextToText.from_pretrained(base_model, dtype="auto")
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(output_dir)
    AutoProcessor.from_pretrained(processor or str(adapter_dir)).save_pretrained(output_dir)
    return output_dir
