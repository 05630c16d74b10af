"""Supervised finetuning of a video LLM on an instruction dataset: TRL `SFTTrainer` + PEFT LoRA + video collator.

```bash
accelerate launch --config_file recipes/accelerate_configs/cpu.yaml -m vstar.cli train \
    --config recipes/demo/config_shapes_tiny.yaml --dataset runs/demo/cycle-1/dataset --output_dir /tmp/model
```
"""

from __future__ import annotations

import json
import logging
import re
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

    def __post_init__(self):
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


def latest_checkpoint(output_dir: str | Path, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint to resume from: a given path, or with `last` the newest complete `checkpoint-*` in `output_dir`.

    The Trainer writes `trainer_state.json` last, so a checkpoint without a readable one was cut short by a kill.
    """
    if resume_from_checkpoint != "last":
        return resume_from_checkpoint
    candidates = [d for d in Path(output_dir).glob("checkpoint-*") if d.name.split("-")[-1].isdigit()]
    for checkpoint in sorted(candidates, key=lambda d: int(d.name.split("-")[-1]), reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("Skipping %s: the run stopped while writing it.", checkpoint)
            continue
        return str(checkpoint)
    return None


def train(config: VStarSFTConfig, train_dataset=None) -> dict[str, Any]:
    """Finetune and save the adapter (or full model) with its processor to `config.output_dir`.

    Args:
        config: the training settings.
        train_dataset: rows to train on; loaded from `config.dataset` when not given.

    Returns:
        `{"output_dir", "train_loss", "global_step", "num_rows"}`.
    """
    from transformers import AutoProcessor
    from trl import SFTTrainer

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
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
    checkpoint = latest_checkpoint(config.output_dir, config.resume_from_checkpoint)
    if checkpoint:
        logger.info("Resuming training from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    output_dir = Path(config.output_dir)
    trainer.save_model(str(output_dir))  # every process calls it (ZeRO-3 / FSDP gather); the main one writes
    summary = {
        "output_dir": str(output_dir),
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "num_rows": len(dataset),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
    }
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "Trained %d steps on %d rows, loss %.4f -> %s",
        summary["global_step"],
        len(dataset),
        summary["train_loss"],
        output_dir,
    )
    return summary


def trainable_modules(model) -> list[str]:
    """Names of modules with trainable parameters (for reporting what LoRA touches)."""
    names = {
        re.sub(r"\.(weight|bias|lora_[AB]\.default\.weight)$", "", n)
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    return sorted(names)


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
